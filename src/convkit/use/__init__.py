"""Using trained runs: prediction and export."""
