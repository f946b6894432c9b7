//! Many datagrams, each to its own address, in one system call (`sendmmsg(2)`).
//!
//! The node sends every packet it forwards as its own datagram, to as many addresses as there
//! are subscribers. One `sendto` per datagram spent a good part of the node's time entering and
//! leaving the kernel; one `sendmmsg` per batch of [`BATCH`] pays that once.
//!
//! This is the only module of the node with `unsafe` code: the call itself, with pointers to
//! buffers that live on this function's stack for its whole duration.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// The most datagrams handed to the kernel in one call.
pub const BATCH: usize = 64;

/// One address in the form the kernel reads.
enum RawAddress {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl RawAddress {
    fn new(address: SocketAddr) -> Self {
        match address {
            SocketAddr::V4(address) => Self::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: address.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(address.ip().octets()),
                },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(address) => Self::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: address.port().to_be(),
                sin6_flowinfo: address.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: address.ip().octets(),
                },
                sin6_scope_id: address.scope_id(),
            }),
        }
    }

    fn pointer_and_length(&mut self) -> (*mut libc::c_void, libc::socklen_t) {
        match self {
            Self::V4(raw) => (
                (raw as *mut libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            Self::V6(raw) => (
                (raw as *mut libc::sockaddr_in6).cast(),
                size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        }
    }
}

/// Sends the first up to [`BATCH`] of `datagrams` on the non-blocking `socket` in one call.
/// Returns how many left (at least one), or the error of the first, which was not sent
/// (`WouldBlock` when the socket's buffer is full).
pub fn send<'a>(
    socket: &impl AsRawFd,
    datagrams: impl IntoIterator<Item = (&'a [u8], SocketAddr)>,
) -> io::Result<usize> {
    let mut addresses = Vec::with_capacity(BATCH);
    let mut buffers: Vec<&[u8]> = Vec::with_capacity(BATCH);
    for (buffer, address) in datagrams.into_iter().take(BATCH) {
        addresses.push(RawAddress::new(address));
        buffers.push(buffer);
    }
    if buffers.is_empty() {
        return Ok(0);
    }
    let mut vectors: Vec<libc::iovec> = buffers
        .iter()
        .map(|buffer| libc::iovec {
            iov_base: buffer.as_ptr().cast_mut().cast(),
            iov_len: buffer.len(),
        })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = Vec::with_capacity(buffers.len());
    for (address, vector) in addresses.iter_mut().zip(vectors.iter_mut()) {
        let (name, name_length) = address.pointer_and_length();
        // SAFETY: an all-zero `msghdr` is valid (no control data, no flags); the fields set
        // below point into `addresses` and `vectors`, which outlive the call.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_name = name;
        header.msg_namelen = name_length;
        header.msg_iov = vector as *mut libc::iovec;
        header.msg_iovlen = 1;
        headers.push(libc::mmsghdr {
            msg_hdr: header,
            msg_len: 0,
        });
    }
    // SAFETY: `headers` holds `headers.len()` initialised entries whose pointers refer to
    // `addresses`, `vectors` and the caller's buffers, all alive and unmoved until this returns;
    // the kernel only reads them (and writes `msg_len` into `headers`).
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            headers.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn every_datagram_reaches_its_own_address_in_order() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let receivers: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let payloads: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
        let datagrams: Vec<(&[u8], SocketAddr)> = payloads
            .iter()
            .enumerate()
            .map(|(i, payload)| {
                let to = receivers[i % 3].local_addr().unwrap();
                (payload.as_slice(), to)
            })
            .collect();
        let mut sent = 0;
        while sent < datagrams.len() {
            let n = send(&sender, datagrams[sent..].iter().copied()).unwrap();
            assert!((1..=BATCH).contains(&n), "{n}");
            sent += n;
        }
        let mut buffer = [0u8; 256];
        for (i, payload) in payloads.iter().enumerate() {
            let (length, from) = receivers[i % 3].recv_from(&mut buffer).unwrap();
            assert_eq!(&buffer[..length], payload.as_slice(), "datagram {i}");
            assert_eq!(from, sender.local_addr().unwrap());
        }
    }

    #[test]
    fn nothing_to_send_is_no_call_and_no_error() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(send(&sender, std::iter::empty()).unwrap(), 0);
    }

    #[test]
    fn an_ipv6_address_is_written_correctly() {
        let Ok(sender) = UdpSocket::bind("[::1]:0") else {
            // No IPv6 loopback on this machine: nothing to check.
            return;
        };
        let receiver = UdpSocket::bind("[::1]:0").unwrap();
        let to = receiver.local_addr().unwrap();
        assert_eq!(send(&sender, [(&b"hallo"[..], to)]).unwrap(), 1);
        let mut buffer = [0u8; 16];
        let (length, _) = receiver.recv_from(&mut buffer).unwrap();
        assert_eq!(&buffer[..length], b"hallo");
    }
}
