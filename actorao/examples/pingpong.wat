  ;; pingpong: counts the Pings it receives and answers each with a Ping to its sender.
  ;;   Start (Data: a process id)  sends the first Ping there, and makes this process the one that
  ;;                               stops: it answers Pings only until it has received 1,000.
  ;;   Ping                        adds one and answers, unless this is the stopping side at 1,000.
  ;;   anything else               replies with the count.
  (func (export "handle") (param $msg i32) (param $env i32) (result i32)
    (local $target i32) (local $out i32) (local $p i32)
    (if (call $contains (local.get $msg) ${action_start})
      (then
        (i32.store (i32.const 8) (i32.const 1))
        (local.set $target (call $after (local.get $msg) ${data_key}))))
    (if (call $contains (local.get $msg) ${action_ping})
      (then
        (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))
        (if (i32.or (i32.eqz (i32.load (i32.const 8)))
                    (i64.lt_u (i64.load (i32.const 0)) (i64.const 1000)))
          (then (local.set $target (call $after (local.get $msg) ${from_key}))))))
    (if (i32.eqz (local.get $target))
      (then (return (call $reply_number (i64.load (i32.const 0))))))
    (local.set $out (call $malloc (i32.const 512)))
    (local.set $p (call $emit (local.get $out) ${ok_output_open}))
    (local.set $p (call $emit_u64 (local.get $p) (i64.load (i32.const 0))))
    (local.set $p (call $emit (local.get $p) ${messages_open}))
    (local.set $p (call $emit (local.get $p) (local.get $target) (i32.const 43)))
    (local.set $p (call $emit (local.get $p) ${ping_tail}))
    (i32.store8 (local.get $p) (i32.const 0))
    (call $finish (local.get $out)))
