//! Socket options that neither the standard library nor `socket2` offers, each one
//! `setsockopt` call: buffer sizes beyond the kernel's limit for unprivileged processes
//! (`SO_RCVBUFFORCE`, `SO_SNDBUFFORCE`), for a node that runs with `CAP_NET_ADMIN`, the
//! kernel's receive time with each datagram (`SO_TIMESTAMPNS`), and runs of datagrams from one
//! sender handed over as one message (`UDP_GRO`).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

/// Which buffer.
#[derive(Clone, Copy, Debug)]
pub enum Buffer {
    /// The receive buffer.
    Receive,
    /// The send buffer.
    Send,
}

/// Sets `buffer` of `socket` to `bytes` past the kernel's cap; fails without `CAP_NET_ADMIN`.
pub fn force_buffer(socket: &impl AsRawFd, buffer: Buffer, bytes: usize) -> io::Result<()> {
    let option = match buffer {
        Buffer::Receive => libc::SO_RCVBUFFORCE,
        Buffer::Send => libc::SO_SNDBUFFORCE,
    };
    set(
        socket,
        option,
        libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX),
    )
}

/// Has the kernel note, with each datagram `socket` receives, when it received it, on the
/// system clock in nanoseconds (`SO_TIMESTAMPNS`); `batch::receive` reads it.
pub fn enable_arrival_times(socket: &impl AsRawFd) -> io::Result<()> {
    set(socket, libc::SO_TIMESTAMPNS, 1)
}

/// Has the kernel hand over runs of datagrams from one sender that arrive together as one
/// message with the size of its segments (`UDP_GRO`, Linux 5.0 and later); `batch::receive`
/// reads the size and the inbox cuts the message apart. Its buffers must then hold the largest
/// message (`batch::COALESCED_SIZE`).
pub fn enable_receive_offload(socket: &impl AsRawFd) -> io::Result<()> {
    set_at(socket, libc::SOL_UDP, libc::UDP_GRO, 1)
}

/// Sets the socket-level `option` of `socket` to `value`.
fn set(socket: &impl AsRawFd, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    set_at(socket, libc::SOL_SOCKET, option, value)
}

/// Sets `option` of `level` of `socket` to `value`.
fn set_at(
    socket: &impl AsRawFd,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` lives on this stack frame for the whole call and its size is passed; the
    // kernel only reads it.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
