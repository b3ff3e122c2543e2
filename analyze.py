"""Standalone evaluation jobs: ``python analyze.py --config configs/analyze/<job>.yaml``.

A thin LightningCLI wrapper: the config names the analysis LightningModule (and
optionally a datamodule) and the Trainer (devices, strategy, logger); the job runs the
test loop once. The resolved config is saved as config.yaml in the run folder.

The run folder is named by the run's identity (its config without operational options
such as devices or batch sizes): the same command run again continues an interrupted
run, measuring only what is missing; ``--fresh true`` starts afresh. The files behind the
model and data options are fingerprinted (inputs.json): a continued run whose inputs
changed stops with a line naming what changed, and a job started while another runs in
the same folder stops in one line (an advisory lock, released when a process ends). The
whole job is checked before anything is computed.

Exit status: 0 all samples measured; 2 a configuration mistake (one line on stderr,
nothing computed, no run folder; also when another job runs in the same folder); 3 finished, with failed samples recorded in
failures.rank<k>.jsonl; 1 any other error (status.json then says "stopped" with the reason; an
OS error such as a full disk is one line naming the path; a rerun resumes).
"""
from __future__ import annotations

import sys

from infodiff_lightning.runs.cli import AnalyzeCLI, config_error, finish_distributed, os_error_line, quiet_console
from infodiff_lightning.runs.run_lock import RunFolderBusy
from infodiff_lightning.modules.analysis_job import EXIT_SAMPLE_FAILURES, AnalysisJob, SampleFailure


def main(args: list[str] | None = None) -> int:
    quiet_console()
    try:
        cli = AnalyzeCLI(model_class=None, datamodule_class=None, run=False, save_config_kwargs={"overwrite": True},
                         parser_kwargs={"description": __doc__}, args=args)
    except RunFolderBusy as e:
        return config_error(e, "analyze.py")
    except (ValueError, TypeError, FileNotFoundError, OSError) as e:
        return config_error(e, "the configuration is not valid")
    job = cli.model
    if isinstance(job, AnalysisJob):
        try:
            job.validate(cli.datamodule)
        except ValueError as e:
            return config_error(e, f"{type(job).__name__}")
    try:
        cli.claim_run_folder()
    except (RunFolderBusy, ValueError) as e:
        return config_error(e, "analyze.py")
    try:
        cli.trainer.test(job, datamodule=cli.datamodule, verbose=False)
    except SampleFailure as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_SAMPLE_FAILURES
    except BaseException as e:  # the folder says the run stopped, and why; the records stay for a resume
        cli.mark_stopped(e)
        if isinstance(e, OSError):  # a full or read-only disk: one line naming the path
            print(f"error: analyze.py: {os_error_line(e)}", file=sys.stderr)
            return 1
        raise
    finally:
        cli.release_run_folder()
    finish_distributed()
    if isinstance(job, AnalysisJob) and job.failed_samples:
        return EXIT_SAMPLE_FAILURES
    return 0


if __name__ == "__main__":
    sys.exit(main())
