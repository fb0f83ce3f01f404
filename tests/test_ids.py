"""Event and request ids are random RFC 4122 version-4 UUIDs in canonical form."""
import uuid

from bus.ids import new_id


def test_ids_are_canonical_version_4_uuids():
    for _ in range(2000):
        text = new_id()
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_ids_do_not_repeat_and_use_every_variant_digit():
    ids = [new_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert {i[19] for i in ids} == set("89ab")


def test_a_forked_child_never_hands_out_an_id_its_parent_does():
    import os
    new_id()  # the parent now holds ids made ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, ",".join(new_id() for _ in range(300)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split(","))
    os.waitpid(pid, 0)
    parent = {new_id() for _ in range(300)}
    assert len(child) == 300 and not child & parent
