"""Running a model on a shot: the pipeline, the sampler, guidance anchors, the reference warp."""
