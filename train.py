"""Fine-tuning with live information monitoring.

    python train.py fit --config configs/train/tiny_shapes.yaml
    python train.py fit --config configs/train/tiny_shapes.yaml --print_config
    python train.py fit --config configs/train/tiny_shapes.yaml --trainer.max_steps 500 --model.lora_rank 4
    python train.py fit --config ... --ckpt_path runs/train/tiny_shapes/version_0/checkpoints/last.ckpt   # resume

A thin LightningCLI wrapper: the model (DiffusionFineTuner), the datamodule, the
callbacks (InformationMonitor, checkpoints) and the Trainer all come from the YAML; the
resolved config is saved as config.yaml in the run folder. A configuration mistake is
reported in one line (exit status 2; INFODIFF_DEBUG=1 shows the traceback).
"""
from __future__ import annotations

import sys

from infodiff_lightning.runs.cli import InfodiffCLI, config_error, finish_distributed, quiet_console


def main(args=None) -> int:
    quiet_console()
    try:
        InfodiffCLI(model_class=None, datamodule_class=None, save_config_kwargs={"overwrite": True},
                    parser_kwargs={"description": __doc__}, args=args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        return config_error(e, "train.py")
    finish_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
