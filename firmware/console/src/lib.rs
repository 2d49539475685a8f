//! Console command language and serial line discipline, shared by the Unix socket and the serial port.
