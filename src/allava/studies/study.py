"""What every study shares: its folder, the default run it starts from, its report's frame."""
from __future__ import annotations

from pathlib import Path

from allava.config import ConfigError
from allava.studies.config import QuickstartConfig
from allava.studies.phases import Phases
from allava.studies.quickstart import RUN, run_quickstart, write_report
from allava.studies.report import (
    TARGET_STUDY_WALL_S,
    comparison_lines,
    strip_ids,
    target,
    targets_lines,
    write_json_md,
)


class Study:
    """A study of OUT: runs (or resumes) the default run, then its own phases in OUT/studies/NAME/."""

    def __init__(self, name: str, out: str | Path, cfg: QuickstartConfig):
        self.name, self.out, self.cfg = name, Path(out), cfg
        run_quickstart(self.out, cfg)
        self.default = Phases(self.out)
        self.folder = self.out / "studies" / name
        self.phases = Phases(self.folder)
        self.run_name = RUN

    def default_eval(self, stage: str = "stage2") -> dict:
        return self.default.done[f"eval-{self.run_name}/{stage}"]

    def default_model(self, stage: str) -> str:
        stages = self.default.done[f"train-{self.run_name}"]["stages"]
        if stage not in stages:
            raise ConfigError(f"the {self.name} study needs the default run's {stage}; it is disabled in this config")
        return stages[stage]["model_dir"]

    def write(self, title: str, question: str, body: list[str], report: dict, comparisons: dict[str, dict],
              headline: str) -> dict:
        """DIR/studies/NAME/report.md + report.json, then the default run's report (to link it)."""
        wall = self.phases.wall_s()
        report = {"study": self.name, "question": question, "headline": headline, **report,
                  "comparisons": comparisons, "phases": strip_ids(self.phases.done), "wall_s": wall,
                  "peak_rss_mb": self.phases.peak_rss_mb(),
                  "targets": {"wall_time": target(wall, f"<= {TARGET_STUDY_WALL_S} s (this study's own phases)",
                                                  wall <= TARGET_STUDY_WALL_S, unit="s")}}
        lines = [f"# {title}", "", question, "", f"**{headline}**", "",
                 f"This study's own phases took {wall / 60:.1f} min (the default run it starts from is reported in "
                 f"[../../report.md](../../report.md)); peak RSS {report['peak_rss_mb']:.0f} MiB.", "",
                 "## Targets", ""] + targets_lines(report["targets"]) + [""] + body
        lines += ["", "## Paired tests", ""] + comparison_lines(comparisons)
        write_json_md(self.folder, report, lines)
        write_report(self.out, self.cfg)
        return report
