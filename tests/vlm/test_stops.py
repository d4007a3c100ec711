from service.vlm.stops import cut_at_stop


def test_cut_at_earliest_stop():
    assert cut_at_stop("abc STOP def END", ["END", "STOP"]) == ("abc ", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)
