  ;; trapper: a counter that misbehaves on request.
  ;;   Inc   adds one.        Get  replies with the count.
  ;;   Trap  adds one, then executes `unreachable`: the add must be rolled back.
  ;;   Loop  adds one, then spins forever: fuel must stop it, and the add must be rolled back.
  ;;   Grow  grows memory by 16 pages and adds one, then traps.
  (func (export "handle") (param $msg i32) (param $env i32) (result i32)
    (if (call $contains (local.get $msg) ${action_inc})
      (then (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))))
    (if (call $contains (local.get $msg) ${action_trap})
      (then
        (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))
        unreachable))
    (if (call $contains (local.get $msg) ${action_loop})
      (then
        (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))
        (loop $forever (br $forever))))
    (if (call $contains (local.get $msg) ${action_grow})
      (then
        (drop (memory.grow (i32.const 16)))
        (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))
        unreachable))
    (call $reply_number (i64.load (i32.const 0))))
