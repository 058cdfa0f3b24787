"""Scale-out batch inference on Ray Data (predict and eval on a cluster)."""
