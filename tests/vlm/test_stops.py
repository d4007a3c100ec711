from service.vlm.stops import StopStream, cut_at_stop


def test_cut_at_earliest_stop():
    assert cut_at_stop("abc STOP def END", ["END", "STOP"]) == ("abc ", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)


def test_stop_split_across_chunks_is_never_emitted():
    stream = StopStream(["STOP"])
    out = list(stream.feed(["hello S", "TO", "P and more"]))
    assert "".join(out) == "hello "
    assert stream.stopped


def test_text_without_stop_passes_through_whole():
    stream = StopStream(["###"])
    assert "".join(stream.feed(["a#", "b", "#c"])) == "a#b#c"
    assert not stream.stopped


def test_no_stops_streams_every_chunk_immediately():
    assert list(StopStream([]).feed(["a", "b"])) == ["a", "b"]
