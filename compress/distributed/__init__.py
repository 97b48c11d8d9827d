"""Distributed training on torch.distributed: data parallel (DDP) and GPipe pipelines.

`session` holds the process group, `jobs` carries training jobs from rank 0 to the
other ranks, `parallel` runs a training step across ranks, `worker` is the loop the
other ranks run, `launch` starts the processes through torchrun.
"""
