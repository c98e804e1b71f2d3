"""Training: mesh and sharding, train state, losses, the stage-1/stage-2 steps and the loop."""
