//! The only code that touches hardware: watchdog, LEDs, button, serial port; Linux and simulated.
