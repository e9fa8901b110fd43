"""WeaveDrive (AOP-5) in the VM: a wasm64 module shaped like aos-llama opens, reads and seeks files
that a drive serves, through WeaveDrive's imports and WASI's, which share one position; data the
process may not read halts the evaluation.
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import orjson
import pytest
import wasmtime

from actorao import Node, ans104
from actorao._exceptions import InvalidMessage
from actorao.cu._drive import ProcessDrive
from actorao.message import block_id
from actorao.persist import Store
from actorao.vm import Evaluator, Instance, compile_module
from actorao.vm._weavedrive import HALT, DriveFile, FileNotAdmissible
from tests.test_aos import aos_wasm, evaluate

PATH_AT, OUT_AT, FIRST_AT, SECOND_AT = 1024, 2000, 3000, 3100
CONTENT = b"abcdefghijklmnop"
ANSWER = '{"ok":true,"response":{"Output":"done"}}'


def reader_module(*, close: bool = True) -> bytes:
    """Opens the path at PATH_AT; reads 4 bytes with WeaveDrive's read, skips one with fd_seek, reads 8
    with fd_read. At OUT_AT: fd, what read answered, fd_seek's errno and new offset, fd_read's errno
    and count (i32 i32 i32 i64 i32 i64)."""
    answer = ANSWER.replace('"', '\\"') + "\\00"
    return wasmtime.wat2wasm(f"""
    (module
      (import "env" "__asyncjs__weavedrive_open" (func $open (param i64 i64) (result i32)))
      (import "env" "__asyncjs__weavedrive_read" (func $read (param i32 i64 i64) (result i32)))
      (import "env" "__asyncjs__weavedrive_close" (func $close (param i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_seek" (func $seek (param i32 i64 i32 i64) (result i32)))
      (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i64 i64 i64) (result i32)))
      (import "env" "emscripten_date_now" (func (result f64)))
      (memory (export "memory") i64 2)
      (table (export "__indirect_function_table") 1 funcref)
      (global $sp (mut i64) (i64.const 65536))
      (func (export "__wasm_call_ctors"))
      (func (export "emscripten_stack_get_current") (result i64) global.get $sp)
      (func (export "_emscripten_stack_restore") (param i64) local.get 0 global.set $sp)
      (func (export "_emscripten_stack_alloc") (param i64) (result i64)
        global.get $sp local.get 0 i64.sub i64.const -16 i64.and global.set $sp global.get $sp)
      (func (export "setThrew") (param i64 i32))
      (func (export "handle") (param i64 i64) (result i64) (local $fd i32)
        (local.set $fd (call $open (i64.const {PATH_AT}) (i64.const 0)))
        (i32.store (i64.const {OUT_AT}) (local.get $fd))
        (if (local.get $fd) (then
          (i32.store (i64.const {OUT_AT + 4}) (call $read (local.get $fd) (i64.const {FIRST_AT}) (i64.const 4)))
          (i32.store (i64.const {OUT_AT + 8})
            (call $seek (local.get $fd) (i64.const 1) (i32.const 1) (i64.const {OUT_AT + 12})))
          (i64.store (i64.const 2100) (i64.const {SECOND_AT}))
          (i64.store (i64.const 2108) (i64.const 8))
          (i32.store (i64.const {OUT_AT + 20})
            (call $fd_read (local.get $fd) (i64.const 2100) (i64.const 1) (i64.const {OUT_AT + 24})))
          {"(drop (call $close (local.get $fd)))" if close else ""}))
        i64.const 4096)
      (data (i64.const 4096) "{answer}"))
    """)


class Bytes:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        return self.data[offset:offset + length]


class Files:
    """A drive over a dict: absent paths are None, paths in ``refused`` are not admissible."""

    def __init__(self, files: dict[str, bytes], refused: tuple[str, ...] = ()) -> None:
        self.files = {path: Bytes(data) for path, data in files.items()}
        self.refused = refused

    def open(self, path: str) -> DriveFile | None:
        if path in self.refused:
            raise FileNotAdmissible(path, "no attestation")
        return self.files.get(path)

    def reopen(self, path: str) -> DriveFile:
        return self.files[path]


def run(instance: Instance, path: str) -> tuple[bytes, bool]:
    instance.write(PATH_AT, path.encode() + b"\0")
    return Evaluator().evaluate(instance, orjson.dumps({"Id": "m", "Tags": []}), b"{}")


def outputs(instance: Instance) -> tuple[int, ...]:
    return struct.unpack("<iiiqiq", instance.read(OUT_AT, 32))


def test_weavedrive_read_and_wasi_share_one_position() -> None:
    instance = Instance(compile_module(reader_module()), memory_limit=1 << 24)
    drive = Files({"/data/model": CONTENT})
    instance.host.files.drive = drive
    result, failed = run(instance, "/data/model")
    assert not failed, result
    assert outputs(instance) == (3, 4, 0, 5, 0, 8)
    assert instance.read(FIRST_AT, 4) == b"abcd" and instance.read(SECOND_AT, 8) == b"fghijklm"
    assert drive.files["/data/model"].reads == [(0, 4), (5, 8)]  # only the ranges asked for


def test_an_absent_file_is_fd_0_and_without_a_drive_every_file_is_absent() -> None:
    instance = Instance(compile_module(reader_module()), memory_limit=1 << 24)
    _, failed = run(instance, "/data/model")
    assert not failed and outputs(instance)[0] == 0
    instance.host.files.drive = Files({"/data/other": CONTENT})
    _, failed = run(instance, "/data/model")
    assert not failed and outputs(instance)[0] == 0


def test_inadmissible_data_halts_the_evaluation() -> None:
    instance = Instance(compile_module(reader_module()), memory_limit=1 << 24)
    instance.host.files.drive = Files({"/data/model": CONTENT}, refused=("/data/model",))
    result, failed = run(instance, "/data/model")
    assert failed
    assert orjson.loads(result)["Error"].startswith(HALT + ": /data/model")


def test_open_files_are_state_a_restored_instance_reads_on_from_the_same_place() -> None:
    compiled = compile_module(reader_module(close=False))
    first = Instance(compiled, memory_limit=1 << 24)
    first.host.files.drive = Files({"/data/model": CONTENT})
    assert not run(first, "/data/model")[1]
    snapshot = first.snapshot()
    moved = Instance(compiled, memory_limit=1 << 24)
    moved.restore(snapshot)
    assert moved.digest() == first.digest()
    moved.host.files.drive = Files({"/data/model": CONTENT})
    assert moved.host.files.read(3, 3) == b"nop"  # fd 3, left after "fghijklm"
    # and a snapshot taken before the file was opened closes it again
    fresh = Instance(compiled, memory_limit=1 << 24)
    first.restore(fresh.snapshot())
    assert 3 not in first.host.files


# -- on a node: real aos (wasm64, Asyncify) reading data stored in LMDB ----------------------------------
def test_aos_reads_attested_data_from_the_store_and_halts_on_unattested_data(tmp_path: Path) -> None:
    wasm = aos_wasm("wasm64")
    text = b"hello weavedrive, from lmdb"
    with Node(tmp_path / "node", workers=1) as node:
        data_id = node.add_data(text, {"Content-Type": "text/plain"})
        assert node.add_data(text) == data_id  # stored once, under its SHA-256
        assert node._store.data_range(data_id, 6, 10) == b"weavedrive"
        pid = node.spawn(wasm, {"Extension": "WeaveDrive", "Attestor": node.identity})
        assert evaluate(node, pid, "kept = 41").ok
        read = (f"local f = io.open('/data/{data_id}'); if not f then return 'absent' end; "
                "local head = f:read(5); f:seek('set', 6); kept = kept + 1; return head .. '|' .. f:read(10)")
        halted = evaluate(node, pid, read)
        assert halted.error is not None and halted.error.startswith(f"{HALT}: /data/{data_id}")
        assert evaluate(node, pid, "return kept").output["data"] == "41"  # carried on from before it
        attested = node.send(pid, {"Type": "Attestation", "Message": data_id, "Data-Protocol": "ao"})
        assert node.result(attested, timeout=60).error is None
        assert evaluate(node, pid, read).output["data"] == "hello|weavedrive"
        absent = evaluate(node, pid, f"return tostring(io.open('/data/{'A' * 43}'))")
        assert absent.error is not None and HALT in absent.error  # not stored and not attested: halts too
        assert evaluate(node, pid, "return kept").output["data"] == "42"


def test_without_the_extension_every_file_is_absent(tmp_path: Path) -> None:
    with Node(tmp_path / "node", workers=1) as node:
        data_id = node.add_data(b"data")
        pid = node.spawn(aos_wasm("wasm64"))
        result = evaluate(node, pid, f"return tostring(io.open('/data/{data_id}'))")
        assert result.ok, result.error
        assert result.output["data"] == "nil"


def test_individual_mode_admits_data_made_available_in_the_log(tmp_path: Path) -> None:
    with Node(tmp_path / "node", workers=1) as node:
        data_id = node.add_data(b"individual data")
        read = f"local f = io.open('/data/{data_id}'); return f and f:read(10) or 'absent'"
        available = {"Type": "Available", "ID": data_id, "Data-Protocol": "WeaveDrive"}
        individual = node.spawn(aos_wasm("wasm64"), {"Extension": "WeaveDrive", "Availability-Type": "Individual"})
        halted = evaluate(node, individual, read)
        assert halted.error is not None and halted.error.startswith(f"{HALT}: /data/{data_id}")
        assert node.result(node.send(individual, available), timeout=60).error is None
        assert evaluate(node, individual, read).output["data"] == "individual"
        # in Assignments mode (the default) an Available item admits nothing: the attestation does
        assignments = node.spawn(aos_wasm("wasm64"), {"Extension": "WeaveDrive"})
        node.result(node.send(assignments, available), timeout=60)
        halted = evaluate(node, assignments, read)
        assert halted.error is not None and halted.error.startswith(f"{HALT}: /data/{data_id}")
        node.result(node.send(assignments, {"Type": "Attestation", "Message": data_id, "Data-Protocol": "ao"}),
                    timeout=60)
        assert evaluate(node, assignments, read).output["data"] == "individual"


def test_only_ao_items_and_weavedrive_availability_enter_a_log(tmp_path: Path) -> None:
    signer = ans104.RsaSigner.generate()
    with Node(tmp_path / "node", workers=1) as node:
        data_id = node.add_data(b"signed availability")
        pid = node.spawn(aos_wasm("wasm64"), {"Extension": "WeaveDrive", "Availability-Type": "Individual",
                                              "Attestor": signer.address})
        item = ans104.create_data_item(signer, " ", [("Type", "Available"), ("ID", data_id),
                                                     ("Data-Protocol", "WeaveDrive")], target=pid)
        ack = node.post_item(item)
        assert not isinstance(ack, str)  # assigned to the process, not stored as an upload
        ack.result(timeout=60)
        read = f"local f = io.open('/data/{data_id}'); return f and f:read(6) or 'absent'"
        assert evaluate(node, pid, read).output["data"] == "signed"
        # a signed Attestation from an Attestor enters the log too, and admits data as it does
        attested_id = node.add_data(b"signed attestation")
        attestation = ans104.create_data_item(signer, " ", [("Data-Protocol", "ao"), ("Variant", "ao.TN.1"),
                                                            ("Type", "Attestation"), ("Message", attested_id)],
                                              target=pid)
        ack = node.post_item(attestation)
        assert not isinstance(ack, str)
        ack.result(timeout=60)
        read = f"local f = io.open('/data/{attested_id}'); return f and f:read(6) or 'absent'"
        assert evaluate(node, pid, read).output["data"] == "signed"
        untargeted = ans104.create_data_item(signer, " ", [("Type", "Available"), ("ID", data_id),
                                                           ("Data-Protocol", "WeaveDrive")])
        with pytest.raises(InvalidMessage, match="Type=Available item needs a target"):
            node.post_item(untargeted)
        with pytest.raises(InvalidMessage, match=r"Data-Protocol.*only other item.*Type=Available"):
            node.send(pid, {"Type": "Message", "Data-Protocol": "WeaveDrive"})
        with pytest.raises(InvalidMessage, match="expected 'ao', got 'other'"):
            node.send(pid, {"Type": "Available", "ID": "A" * 43, "Data-Protocol": "other"})


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def test_tx_headers_come_from_the_log_and_from_data_the_process_may_read(tmp_path: Path) -> None:
    with Node(tmp_path / "node", workers=1) as node:
        attested_id = node.add_data(b"attested bytes", {"Content-Type": "text/plain"})
        held_id = node.add_data(b"held, never attested")
        pid = node.spawn(aos_wasm("wasm64"), {"Extension": "WeaveDrive"})
        attestation = node.send(pid, {"Type": "Attestation", "Message": attested_id, "Data-Protocol": "ao"})
        node.result(attestation, timeout=60)
        read = ("local f = io.open('/tx/%s'); if not f then return 'absent' end; "
                "local size = f:seek('end'); f:seek('set'); local text = f:read(size); f:close(); return text")
        message = orjson.loads(evaluate(node, pid, read % attestation.id).output["data"])
        assert message["id"] == attestation.id and message["ownerAddress"] == node.identity
        assert message["target"] == pid
        assert {"name": _b64("Message"), "value": _b64(attested_id)} in message["tags"]
        data = orjson.loads(evaluate(node, pid, read % attested_id).output["data"])
        assert data["id"] == attested_id and data["ownerAddress"] == node.identity
        assert data["data_size"] == str(len(b"attested bytes"))
        assert data["tags"] == [{"name": _b64("Content-Type"), "value": _b64("text/plain")}]
        # held by the node but not readable by this process, and unknown: both absent, never a halt
        assert evaluate(node, pid, read % held_id).output["data"] == "absent"
        assert evaluate(node, pid, read % ("B" * 43)).output["data"] == "absent"


def test_block_headers_are_the_heights_the_log_has_reached(tmp_path: Path) -> None:
    with Node(tmp_path / "node", workers=1) as node:
        pid = node.spawn(aos_wasm("wasm64"), {"Extension": "WeaveDrive"})
        spawned_at = node.reads.spawn(pid).doc()["Timestamp"]
        read = ("local f = io.open('/block/%s'); if not f then return 'absent' end; "
                "local size = f:seek('end'); f:seek('set'); local text = f:read(size); f:close(); return text")
        block = orjson.loads(evaluate(node, pid, read % 0).output["data"])
        assert block == {"indep_hash": block_id(0), "height": 0, "timestamp": spawned_at // 1000,
                         "previous_block": ""}
        assert evaluate(node, pid, read % 0).output["data"] == orjson.dumps(block).decode()  # the same later on
        assert evaluate(node, pid, read % 1).output["data"] == "absent"  # above the message's Block-Height
        assert evaluate(node, pid, read % "x").output["data"] == "absent"


def test_headers_opened_before_a_restore_are_made_again_alike(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    env = orjson.dumps({"Process": {"Tags": [{"name": "Extension", "value": "WeaveDrive"}]}, "Module": {"Tags": []}})
    log = [orjson.dumps({"Id": "S" * 43, "Owner": "O" * 43, "Target": "", "Tags": [], "Data": "",
                         "Timestamp": 7_000, "Block-Height": 3})]
    message = orjson.dumps({"Id": "M" * 43, "Owner": "O" * 43, "Target": "P" * 43, "Tags": [], "Data": "hi",
                            "Timestamp": 9_000, "Block-Height": 4})

    def drive() -> ProcessDrive:
        return ProcessDrive(store, env, lambda first, last: enumerate(log[first:last + 1]), 1, message)

    for path in ("/tx/" + "S" * 43, "/tx/" + "M" * 43, "/block/3", "/block/4"):
        opened = drive().open(path)
        assert opened is not None, path
        again = drive().reopen(path)
        assert again.read(0, again.size) == opened.read(0, opened.size)
    block = orjson.loads(drive().reopen("/block/3").read(0, 4096))
    assert block["timestamp"] == 7 and block["previous_block"] == block_id(2)
    assert orjson.loads(drive().reopen("/tx/" + "M" * 43).read(0, 4096))["data_size"] == "2"
    assert drive().open("/block/2") is None  # no message of the log is at that height
    with pytest.raises(FileNotAdmissible):
        drive().reopen("/block/5")  # above the reading message: the log no longer shows it
