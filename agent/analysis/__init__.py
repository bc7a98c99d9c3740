"""After offload: probing, the timeline (gaps), and the 24-hour rule."""
