"""radinfill: infill radar-failure holes in DWD RADOLAN composites."""
