"""Child processes with memory and time limits for work that can blow up."""
