def test_tiny_run_trains_and_samples(tiny_run, cli):
    code, out, err = cli("sample", tiny_run, "--length", "30", "--seed", "1")
    assert code == 0, err
    assert len(out) > 10
