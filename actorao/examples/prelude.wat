  ;; Shared by every example module. Memory layout:
  ;;   0..15      module state (an i64 counter at 0)
  ;;   16..19     heap pointer; the bump heap starts at 65536 and is reset after each handle
  ;;   1024..     string constants, placed by actorao.examples
  (memory (export "memory") 2)
  (data (i32.const 16) "\00\00\01\00")

  (func $malloc (export "malloc") (param $size i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (local.set $p (i32.and (i32.add (i32.load (i32.const 16)) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535))
                                      (i32.const 16)))
              (i32.const -1))
          (then unreachable))))
    (i32.store (i32.const 16) (local.get $end))
    (local.get $p))

  ;; Called as the last step of handle: the result stays readable until the next malloc.
  (func $finish (param $out i32) (result i32)
    (i32.store (i32.const 16) (i32.const 65536))
    (local.get $out))

  (func $strlen (param $p i32) (result i32)
    (local $q i32)
    (local.set $q (local.get $p))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (local.get $q))))
        (local.set $q (i32.add (local.get $q) (i32.const 1)))
        (br $next)))
    (i32.sub (local.get $q) (local.get $p)))

  ;; Where the first copy of the $n bytes at $needle ends in the NUL-terminated string at $hay, or 0.
  (func $after (param $hay i32) (param $needle i32) (param $n i32) (result i32)
    (local $last i32) (local $i i32) (local $j i32)
    (local.set $last (i32.sub (i32.add (local.get $hay) (call $strlen (local.get $hay))) (local.get $n)))
    (local.set $i (local.get $hay))
    (block $no
      (loop $at
        (br_if $no (i32.gt_s (local.get $i) (local.get $last)))
        (local.set $j (i32.const 0))
        (block $miss
          (loop $cmp
            (if (i32.eq (local.get $j) (local.get $n))
              (then (return (i32.add (local.get $i) (local.get $n)))))
            (br_if $miss (i32.ne (i32.load8_u (i32.add (local.get $i) (local.get $j)))
                                 (i32.load8_u (i32.add (local.get $needle) (local.get $j)))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $cmp)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $at)))
    (i32.const 0))

  ;; 1 when the NUL-terminated string at $hay contains the $n bytes at $needle.
  (func $contains (param $hay i32) (param $needle i32) (param $n i32) (result i32)
    (i32.ne (call $after (local.get $hay) (local.get $needle) (local.get $n)) (i32.const 0)))

  (func $emit (param $dst i32) (param $src i32) (param $n i32) (result i32)
    (memory.copy (local.get $dst) (local.get $src) (local.get $n))
    (i32.add (local.get $dst) (local.get $n)))

  ;; Writes $v in decimal at $dst and returns the end.
  (func $emit_u64 (param $dst i32) (param $v i64) (result i32)
    (local $digits i32) (local $t i64) (local $end i32)
    (local.set $digits (i32.const 1))
    (local.set $t (local.get $v))
    (block $counted
      (loop $count
        (br_if $counted (i64.lt_u (local.get $t) (i64.const 10)))
        (local.set $t (i64.div_u (local.get $t) (i64.const 10)))
        (local.set $digits (i32.add (local.get $digits) (i32.const 1)))
        (br $count)))
    (local.set $end (i32.add (local.get $dst) (local.get $digits)))
    (local.set $dst (local.get $end))
    (loop $write
      (local.set $dst (i32.sub (local.get $dst) (i32.const 1)))
      (i64.store8 (local.get $dst) (i64.add (i64.const 48) (i64.rem_u (local.get $v) (i64.const 10))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $write (i64.ne (local.get $v) (i64.const 0))))
    (local.get $end))

  ;; The whole result for a plain text Output that is a number.
  (func $reply_number (param $v i64) (result i32)
    (local $out i32) (local $p i32)
    (local.set $out (call $malloc (i32.const 256)))
    (local.set $p (call $emit (local.get $out) ${ok_output_open}))
    (local.set $p (call $emit_u64 (local.get $p) (local.get $v)))
    (local.set $p (call $emit (local.get $p) ${output_close}))
    (i32.store8 (local.get $p) (i32.const 0))
    (call $finish (local.get $out)))
