"""What runs inside the proof's guest: init.sh (PID 1), run.py (the orchestrator),
nr_gnb.c (the gNB-like process with its latency probe) and hog.c (CPU load)."""
