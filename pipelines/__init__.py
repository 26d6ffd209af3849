"""diffusers pipelines of spm-gen."""

from .pipeline_spm_diffusion import SPMDiffusionPipeline, SPMPipelineOutput

__all__ = ["SPMDiffusionPipeline", "SPMPipelineOutput"]
