"""Standalone evaluation jobs: ``python analyze.py --config configs/analyze/<job>.yaml``.

A thin LightningCLI wrapper: the config names the analysis LightningModule (and
optionally a datamodule) and the Trainer (devices, strategy, logger); the job runs the
test loop once. The resolved config is saved as config.yaml in the run folder.
"""
from __future__ import annotations


from lightning.pytorch.cli import LightningCLI


def main(args: list[str] | None = None):
    cli = LightningCLI(
        model_class=None,  # any LightningModule, chosen by class_path in the config
        datamodule_class=None,
        run=False,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": __doc__},
        args=args,
    )
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    return cli


if __name__ == "__main__":
    main()
