"""Training curves in the reports: per-epoch loss (and CVLP tau) read from the checkpoints' extra.history."""
from langtail import io


def _hist(n, tau=False):
    return [{"epoch": e + 1, "loss": 2.0 / (e + 1), "lr": 1e-3, **({"tau": 0.07 - 0.001 * e} if tau else {})}
            for e in range(n)]


def test_curves_section_draws_loss_and_tau_and_names_runs_without_history(tmp_path):
    from langtail.report.curves import curves_section

    lines = curves_section({"pretrain": _hist(3, tau=True), "finetune/lgr": _hist(2), "finetune/fc": []},
                           tmp_path / "figs", "figs")
    text = "\n".join(lines)
    assert "![training curves](figs/training_curves.png)" in text
    assert (tmp_path / "figs" / "training_curves.png").stat().st_size > 1000
    assert "| pretrain | 3 | 2.0000 | 0.6667 |" in text and "| finetune/lgr | 2 | 2.0000 | 1.0000 |" in text
    assert "tau at the end of each epoch" in text
    assert "No history in: finetune/fc." in text


def test_curves_section_without_tau_says_so(tmp_path):
    from langtail.report.curves import curves_section

    text = "\n".join(curves_section({"ca4ltr/label": _hist(2)}, tmp_path, "."))
    assert "no run shown records a per-epoch tau" in text


def test_report_reads_histories_from_declared_checkpoints(tmp_path):
    from langtail.stages.report import read_histories

    io.torch_save(tmp_path / "a.pt", {"extra": {"history": _hist(2, tau=True)}})
    io.torch_save(tmp_path / "b.pt", {"extra": {}})
    h = read_histories({"pretrain": tmp_path / "a.pt", "finetune/fc": tmp_path / "b.pt"})
    assert [r["tau"] for r in h["pretrain"]] == [0.07, 0.069] and h["finetune/fc"] == []
