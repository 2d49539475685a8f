//! Uplink state machine, BLF/MWI take-over bodies and paced resync; sans-IO.
