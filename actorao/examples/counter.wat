  ;; counter: Inc adds one and replies with the new count; Get replies with the count.
  (func (export "handle") (param $msg i32) (param $env i32) (result i32)
    (if (call $contains (local.get $msg) ${action_inc})
      (then (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))))
    (call $reply_number (i64.load (i32.const 0))))
