"""The upload store (store/uploads.py): chunks, quotas, resume, expiry, and every refusal leaving nothing behind."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from robot_model_deployer.store.model_store import STAGING_DIR, UPLOADS_DIR, ModelStore
from robot_model_deployer.store.uploads import (FINISHED_NAME, MAX_CHUNK_BYTES, TransferPace, UploadError, UploadLimits,
                                                UploadStore)

DATA = os.urandom(3 * 1000 + 17)
SHA = hashlib.sha256(DATA).hexdigest()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def send_all(store: UploadStore, upload_id: str, data: bytes, offset: int = 0, chunk: int = 1000):
    info = None
    while offset < len(data):
        piece = data[offset:offset + chunk]
        info = store.write(upload_id, offset, piece, sha(piece))
        offset = info.offset
    return info


@pytest.fixture
def store(tmp_path: Path) -> UploadStore:
    return UploadStore(tmp_path / "uploads", UploadLimits(max_bytes=1 << 20, max_concurrent=2, free_space_margin=0))


def test_chunks_in_order_make_the_declared_file(store: UploadStore) -> None:
    info = store.begin("b.tar", len(DATA), SHA)
    assert (info.offset, info.complete) == (0, False)
    done = send_all(store, info.upload_id, DATA)
    assert done.complete and done.offset == len(DATA)
    path = store.deployable(info.upload_id)
    assert path.name == FINISHED_NAME and path.read_bytes() == DATA


def test_declaring_the_same_file_again_resumes_at_its_offset(store: UploadStore) -> None:
    info = store.begin("b.tar", len(DATA), SHA)
    store.write(info.upload_id, 0, DATA[:1000], sha(DATA[:1000]))
    again = store.begin("other-name.tar", len(DATA), SHA.upper())
    assert (again.upload_id, again.offset) == (info.upload_id, 1000)
    send_all(store, info.upload_id, DATA, offset=1000)
    assert store.begin("b.tar", len(DATA), SHA).complete  # a finished one is found too (installing twice)


def test_an_upload_resumes_in_a_new_store_after_a_restart(tmp_path: Path) -> None:
    """A manager restart: a new UploadStore on the same directory knows the offset and checks the whole sha256."""
    first = UploadStore(tmp_path / "u")
    info = first.begin("b.tar", len(DATA), SHA)
    first.write(info.upload_id, 0, DATA[:2000], sha(DATA[:2000]))
    second = UploadStore(tmp_path / "u")
    assert second.info(info.upload_id).offset == 2000
    assert send_all(second, info.upload_id, DATA, offset=2000).complete
    assert second.deployable(info.upload_id).read_bytes() == DATA


def test_the_model_store_keeps_uploads_when_it_wipes_staging(tmp_path: Path) -> None:
    ModelStore.open(tmp_path / "store")
    uploads = UploadStore(tmp_path / "store" / STAGING_DIR / UPLOADS_DIR)
    info = uploads.begin("b.tar", len(DATA), SHA)
    uploads.write(info.upload_id, 0, DATA[:1000], sha(DATA[:1000]))
    (tmp_path / "store" / STAGING_DIR / "leftover").mkdir()
    ModelStore.open(tmp_path / "store")
    assert not (tmp_path / "store" / STAGING_DIR / "leftover").exists()
    assert UploadStore(tmp_path / "store" / STAGING_DIR / UPLOADS_DIR).info(info.upload_id).offset == 1000


@pytest.mark.parametrize("offset, data, digest, message", [
    (500, DATA[500:1500], sha(b"other"), "do not match its sha256"),
    (1000, DATA[1000:2000], sha(DATA[1000:2000]), "a gap"),
    (200, DATA[200:1200], sha(DATA[200:1200]), "an overlap"),
    (500, b"", sha(b""), "empty chunk"),
    (500, DATA[500:] + b"x", sha(DATA[500:] + b"x"), "overflows the declared size"),
], ids=["chunk hash", "gap", "overlap", "empty", "overflow"])
def test_a_bad_chunk_is_refused_and_writes_nothing(store: UploadStore, offset: int, data: bytes, digest: str,
                                                   message: str) -> None:
    info = store.begin("b.tar", len(DATA), SHA)
    store.write(info.upload_id, 0, DATA[:500], sha(DATA[:500]))
    before = files_under(store.root)
    with pytest.raises(UploadError, match=message):
        store.write(info.upload_id, offset, data, digest)
    assert files_under(store.root) == before
    resumed = store.info(info.upload_id)
    assert send_all(store, info.upload_id, DATA, offset=resumed.offset).complete  # it still finishes


def test_a_chunk_over_the_limit_is_refused(tmp_path: Path) -> None:
    store = UploadStore(tmp_path / "u", UploadLimits(max_chunk=1000))
    info = store.begin("b.tar", len(DATA), SHA)
    with pytest.raises(UploadError, match="over the 1000 bytes"):
        store.write(info.upload_id, 0, DATA[:1001], sha(DATA[:1001]))
    assert store.info(info.upload_id).offset == 0
    with pytest.raises(ValueError, match="max_chunk"):
        UploadLimits(max_chunk=MAX_CHUNK_BYTES + 1)


def test_a_whole_file_that_does_not_match_its_declaration_is_dropped(store: UploadStore) -> None:
    wrong = sha(b"not this file")
    info = store.begin("b.tar", len(DATA), wrong)
    with pytest.raises(UploadError, match="was dropped"):
        send_all(store, info.upload_id, DATA)
    assert files_under(store.root) == {}
    with pytest.raises(UploadError, match="unknown upload id"):
        store.info(info.upload_id)


@pytest.mark.parametrize("upload_id", ["0" * 32, "../../etc", "", "A" * 32])
def test_an_unknown_id_is_refused_everywhere(store: UploadStore, upload_id: str) -> None:
    for call in (lambda: store.write(upload_id, 0, b"x", sha(b"x")), lambda: store.info(upload_id),
                 lambda: store.deployable(upload_id), lambda: store.drop(upload_id)):
        with pytest.raises(UploadError, match="unknown upload id"):
            call()
    assert files_under(store.root) == {}


@pytest.mark.parametrize("size, digest, message", [
    (0, SHA, "size is 0"),
    (len(DATA), "abc", "not 64 hex digits"),
    ((1 << 20) + 1, SHA, "over this robot's upload limit"),
], ids=["empty", "bad sha256", "too big"])
def test_a_bad_declaration_is_refused_and_creates_nothing(store: UploadStore, size: int, digest: str,
                                                          message: str) -> None:
    with pytest.raises(UploadError, match=message):
        store.begin("b.tar", size, digest)
    assert list(store.root.iterdir()) == []


def test_too_many_unfinished_uploads_are_refused(store: UploadStore) -> None:
    for n in range(2):
        store.begin(f"{n}.tar", 10 + n, sha(bytes([n])))
    with pytest.raises(UploadError, match="upload_max_concurrent"):
        store.begin("third.tar", 20, sha(b"3"))
    assert len(list(store.root.iterdir())) == 2


def test_an_upload_that_would_fill_the_disk_is_refused(tmp_path: Path) -> None:
    """Free space counts what unfinished uploads still need, and the margin must stay free."""
    store = UploadStore(tmp_path / "u", UploadLimits(free_space_margin=1000), free_bytes=lambda _: 10_000)
    store.begin("a.tar", 5000, sha(b"a"))
    with pytest.raises(UploadError, match="upload_free_space_mb"):
        store.begin("b.tar", 4500, sha(b"b"))  # 10 000 - 5000 reserved - 4500 < 1000
    store.begin("c.tar", 4000, sha(b"c"))


def test_an_unfinished_upload_cannot_be_deployed(store: UploadStore) -> None:
    info = store.begin("b.tar", len(DATA), SHA)
    with pytest.raises(UploadError, match="finish it first"):
        store.deployable(info.upload_id)


def test_a_finished_upload_takes_no_more_chunks(store: UploadStore) -> None:
    info = store.begin("b.tar", len(DATA), SHA)
    send_all(store, info.upload_id, DATA)
    with pytest.raises(UploadError, match="already complete"):
        store.write(info.upload_id, len(DATA), b"x", sha(b"x"))


def test_idle_uploads_expire_and_active_ones_stay(tmp_path: Path) -> None:
    now = [1e9]
    store = UploadStore(tmp_path / "u", UploadLimits(idle_seconds=60.0), clock=lambda: now[0])
    idle = store.begin("idle.tar", len(DATA), SHA)
    busy = store.begin("busy.tar", 10, sha(b"0123456789"))
    os.utime(idle.path, (now[0] - 61, now[0] - 61))
    os.utime(busy.path, (now[0] - 30, now[0] - 30))
    assert store.expire() == [idle.upload_id]
    assert not (store.root / idle.upload_id).exists()
    assert store.info(busy.upload_id).offset == 0


def test_dropping_an_upload_removes_its_bytes(store: UploadStore) -> None:
    info = store.begin("b.tar", len(DATA), SHA)
    store.write(info.upload_id, 0, DATA[:1000], sha(DATA[:1000]))
    assert store.drop(info.upload_id).offset == 1000
    assert files_under(store.root) == {}


def test_debris_of_a_crash_during_begin_is_removed_on_open(tmp_path: Path) -> None:
    (tmp_path / "u" / ("1" * 32)).mkdir(parents=True)  # crashed before its record was written
    UploadStore(tmp_path / "u")
    assert list((tmp_path / "u").iterdir()) == []


def test_a_name_with_directories_keeps_only_its_base_name(store: UploadStore) -> None:
    assert store.begin("../../x/evil.tar", len(DATA), SHA).name == "evil.tar"


# TransferPace ----------------------------------------------------------------------

def test_no_limit_never_waits() -> None:
    pace = TransferPace(0)
    assert [pace.delay(MAX_CHUNK_BYTES, now) for now in (0.0, 0.0, 0.001)] == [0.0, 0.0, 0.0]


def test_a_seconds_worth_passes_at_once_then_each_chunk_waits_for_its_share() -> None:
    pace = TransferPace(1000.0)
    assert pace.delay(600, 0.0) == 0.0
    assert pace.delay(400, 0.0) == 0.0          # the one-second burst is spent
    assert pace.delay(500, 0.0) == pytest.approx(0.5)
    assert pace.delay(500, 0.5) == pytest.approx(0.5)  # sent when the last answer went out: waits its own share


def test_a_long_sustained_transfer_keeps_to_the_rate() -> None:
    pace, now, sent = TransferPace(20e6), 0.0, 0
    while sent < 200 * 10**6:  # a client that sends the next chunk as soon as the last is answered
        now += pace.delay(MAX_CHUNK_BYTES, now)
        sent += MAX_CHUNK_BYTES
    assert (sent - 20e6) / now == pytest.approx(20e6, rel=0.01)  # beyond the first second's burst


def test_an_idle_pause_refills_at_most_one_seconds_worth() -> None:
    pace = TransferPace(1000.0)
    pace.delay(1000, 0.0)
    assert pace.delay(1000, 60.0) == 0.0
    assert pace.delay(1, 60.0) == pytest.approx(0.001)


def test_a_negative_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="0 \\(no limit\\) or more"):
        TransferPace(-1.0)
