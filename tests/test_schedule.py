import pytest
from hypothesis import given, strategies as st

from rys_search.schedule import Block, LayerSchedule, ScheduleError


def test_count_suffix_equals_general_path():
    a = LayerSchedule.parse("0-9,10-12x2,13-29")
    b = LayerSchedule.parse("0-12,10-12,13-29")
    assert a == b
    assert a.expand() == tuple(range(13)) + (10, 11, 12) + tuple(range(13, 30))
    assert str(a) == str(b) == "0-9,10-12x2,13-29"


def test_structured_blocks_and_rys_pair():
    s = LayerSchedule.from_blocks(30, [Block(10, 12, 1)])
    assert s == LayerSchedule.parse("0-9,10-12x2,13-29") == LayerSchedule.rys(30, 10, 13)
    two = LayerSchedule.from_blocks(30, [(20, 21, 2), (3, 5, 1)])
    assert str(two) == "0-2,3-5x2,6-19,20-21x3,22-29"
    assert two.blocks(30) == (Block(3, 5, 1), Block(20, 21, 2))
    assert two.added_layers(30) == 3 + 4
    assert LayerSchedule.parse("0-5,3-8,6-9").blocks(10) == (Block(3, 5, 1), Block(6, 8, 1))
    assert LayerSchedule.parse("0-5,2-3,6-9").blocks(10) is None  # a partial repeat is no block


def test_adjacent_blocks_stay_separate():
    s = LayerSchedule.from_blocks(10, [(3, 5, 1), (6, 8, 1)])
    assert str(s) == "0-2,3-5x2,6-8x2,9"
    assert s.blocks(10) == (Block(3, 5, 1), Block(6, 8, 1))


def test_identity_and_general_paths():
    assert str(LayerSchedule.identity(30)) == "0-29"
    assert LayerSchedule.identity(30).is_identity(30)
    assert LayerSchedule.identity(30).blocks(30) == ()
    skip = LayerSchedule.parse("0-9,15-29")
    assert str(skip) == "0-9,15-29" and skip.blocks(30) is None
    assert str(LayerSchedule.parse("5-8,3-6")) == "5-8,3-6"
    assert str(LayerSchedule.parse("3,3,3")) == "3x3"
    assert str(LayerSchedule.parse(" 0-3 , 2-2x2 ")) == "0-1,2-3,2x2"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("0-9,,10-29", "empty item"),
        ("0-9,", "empty item"),
        ("12-10", "reversed"),
        ("0-9,10-12x0,13-29", "at least once"),
        ("abc", "cannot read 'abc'"),
        ("0-9;10-29", "cannot read"),
        ("0-9,10-12x,13-29", "cannot read '10-12x'"),
        ("-1-5", "cannot read"),
        ("1.5-3", "cannot read"),
    ],
)
def test_bad_strings_are_refused_with_a_reason(text, message):
    with pytest.raises(ScheduleError, match=message):
        LayerSchedule.parse(text)


def test_out_of_range_needs_the_model_depth():
    LayerSchedule.parse("0-30")  # fine without a model
    with pytest.raises(ScheduleError, match="layer 30 .* out of range for a model with 30 layers"):
        LayerSchedule.parse("0-30", n_layers=30)
    with pytest.raises(ScheduleError, match="out of range"):
        LayerSchedule.from_blocks(30, [(28, 30, 1)])
    with pytest.raises(ScheduleError, match="RYS pair"):
        LayerSchedule.rys(30, 13, 10)
    with pytest.raises(ScheduleError, match="RYS pair"):
        LayerSchedule.rys(30, 10, 31)


def test_bad_blocks_are_refused():
    with pytest.raises(ScheduleError, match="overlap"):
        LayerSchedule.from_blocks(30, [(10, 12, 1), (12, 14, 1)])
    with pytest.raises(ScheduleError, match="at least 1"):
        LayerSchedule.from_blocks(30, [(10, 12, 0)])
    with pytest.raises(ScheduleError, match="reversed"):
        LayerSchedule.from_blocks(30, [(12, 10, 1)])
    with pytest.raises(ScheduleError, match="empty"):
        LayerSchedule(())


paths = st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=80)


@given(paths)
def test_round_trip_of_any_path(path):
    s = LayerSchedule(tuple(path))
    text = str(s)
    assert LayerSchedule.parse(text) == s
    assert str(LayerSchedule.parse(text)) == text  # the canonical form is a fixed point


@st.composite
def block_sets(draw):
    n = draw(st.integers(min_value=1, max_value=40))
    blocks, at = [], 0
    while at < n and draw(st.booleans()):
        start = draw(st.integers(min_value=at, max_value=n - 1))
        end = draw(st.integers(min_value=start, max_value=n - 1))
        blocks.append(Block(start, end, draw(st.integers(min_value=1, max_value=4))))
        at = end + 1
    return n, blocks


@given(block_sets())
def test_expand_of_structured_blocks(case):
    n, blocks = case
    s = LayerSchedule.from_blocks(n, blocks)
    expected = []
    starts = {b.start: b for b in blocks}
    layer = 0
    while layer < n:  # the obvious construction: walk the layers, repeat each block in place
        if layer in starts:
            b = starts[layer]
            expected += list(range(b.start, b.end + 1)) * (1 + b.extra)
            layer = b.end + 1
        else:
            expected.append(layer)
            layer += 1
    assert s.expand() == tuple(expected)
    assert len(s) == n + sum(b.added_layers for b in blocks)
    assert s.blocks(n) == tuple(blocks)
    assert LayerSchedule.parse(str(s), n_layers=n) == s
    for b in blocks:
        assert f"{b}" in str(s)  # each block shows as A-BxN in the canonical string
