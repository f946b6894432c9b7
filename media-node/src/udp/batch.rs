//! Many datagrams, each to its own address, in one system call (`sendmmsg(2)`), and runs of
//! datagrams to one address as one message the kernel cuts up (UDP segmentation offload); and
//! every datagram that waits, up to [`RECEIVE_BATCH`], read in one call (`recvmmsg(2)`).
//!
//! The node sends every packet it forwards as its own datagram, to as many addresses as there
//! are subscribers. One `sendto` per datagram spent a good part of the node's time entering and
//! leaving the kernel; one `sendmmsg` per batch of [`BATCH`] messages pays that once. Within a
//! batch, consecutive datagrams to the same address of the same size (the last of a run may be
//! shorter) go as one message with a `UDP_SEGMENT` control message: the kernel walks its
//! network stack once for the whole run and cuts it into the datagrams at the end (measured on
//! loopback: about a third of the cost per datagram of `sendmmsg` alone). The caller orders a
//! flush by address so that runs form; a kernel or device without segmentation answers with an
//! error, and the caller then sends without it.
//!
//! Reading is batched likewise: where a publisher's packets come faster than the loop wakes,
//! one `recvmmsg` takes what waits into an [`Inbox`] of buffers reused from call to call, in
//! place of a `recvfrom` per datagram and a last one that finds nothing. With each datagram
//! comes the time the kernel received it (where `options::enable_arrival_times` asked for it),
//! so that a publisher's transport-wide feedback tells it how its packets crossed the network,
//! not how long they waited for a busy node to read them. Where the socket asked for receive
//! offload (`options::enable_receive_offload`, UDP GRO), the kernel hands over a run of
//! datagrams from one sender as one message with the size of its segments (another node's
//! segmented sends on one machine, a publisher's keyframe burst through a network card that
//! coalesces): it walks its stack once for the run, and the [`Inbox`] cuts the message into
//! the datagrams again, each with the run's sender and arrival.
//!
//! With `options`, this is the only module of the node with `unsafe` code: the calls
//! themselves, with pointers to buffers that live on the calling function's stack (or in the
//! [`Inbox`] it borrows) for their whole duration.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// The most messages handed to the kernel in one call.
pub const BATCH: usize = 64;
/// The most datagrams in one segmented message (the kernel's limit on older versions).
const MAX_SEGMENTS: usize = 64;
/// The most bytes in one segmented message: it must fit one IP packet before the kernel cuts it.
const MAX_SEGMENTED_BYTES: usize = 60_000;

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

/// What one call sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams, as they leave the kernel.
    pub datagrams: usize,
    /// Messages handed to the kernel (a segmented run is one).
    pub messages: usize,
}

/// Room for the control messages of one message: a `u16` (the segment size sent), or a
/// `timespec` and an `int` (the receive time, the size of coalesced segments), aligned as the
/// kernel reads them.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; 64]);

impl Control {
    const EMPTY: Self = Self([0; 64]);
}

/// Sends the first up to [`BATCH`] messages of `datagrams` on the non-blocking `socket` in one
/// call; with `segment`, each run of consecutive datagrams to one address (equal in size, the
/// last maybe shorter) is one message. Returns what left (at least one datagram), or the error
/// of the first message, which was not sent (`WouldBlock` when the socket's buffer is full; see
/// [`is_segmentation_error`] for a kernel that cannot segment).
pub fn send(
    socket: &impl AsRawFd,
    datagrams: &[(&[u8], SocketAddr)],
    segment: bool,
) -> io::Result<Sent> {
    // Each message: where its datagrams start in `datagrams`, and how many.
    let mut runs: Vec<(usize, usize)> = Vec::with_capacity(BATCH);
    let mut next = 0;
    while next < datagrams.len() && runs.len() < BATCH {
        let (first, to) = datagrams[next];
        let (mut count, mut bytes) = (1, first.len());
        while segment && count < MAX_SEGMENTS {
            let Some((buffer, address)) = datagrams.get(next + count) else {
                break;
            };
            if *address != to
                || buffer.len() > first.len()
                || buffer.is_empty()
                || bytes + buffer.len() > MAX_SEGMENTED_BYTES
            {
                break;
            }
            count += 1;
            bytes += buffer.len();
            if buffer.len() < first.len() {
                // A shorter datagram can only be a run's last.
                break;
            }
        }
        runs.push((next, count));
        next += count;
    }
    if runs.is_empty() {
        return Ok(Sent {
            datagrams: 0,
            messages: 0,
        });
    }
    let mut vectors: Vec<libc::iovec> = datagrams[..next]
        .iter()
        .map(|(buffer, _)| libc::iovec {
            iov_base: buffer.as_ptr().cast_mut().cast(),
            iov_len: buffer.len(),
        })
        .collect();
    let mut addresses: Vec<RawAddress> = runs
        .iter()
        .map(|(start, _)| RawAddress::new(datagrams[*start].1))
        .collect();
    let mut controls = vec![Control::EMPTY; runs.len()];
    let mut headers: Vec<libc::mmsghdr> = Vec::with_capacity(runs.len());
    for ((&(start, count), address), control) in runs
        .iter()
        .zip(addresses.iter_mut())
        .zip(controls.iter_mut())
    {
        let (name, name_length) = address.pointer_and_length();
        // SAFETY: an all-zero `msghdr` is valid (no control data, no flags); the fields set
        // below point into `addresses`, `vectors` and `controls`, which outlive the call.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_name = name;
        header.msg_namelen = name_length;
        header.msg_iov = vectors[start..].as_mut_ptr();
        header.msg_iovlen = count as _;
        if count > 1 {
            let size = datagrams[start].0.len() as u16;
            // SAFETY: `control` is 32 bytes aligned for `cmsghdr`, more than the 24 that
            // CMSG_SPACE(2) needs; CMSG_FIRSTHDR of a header whose control buffer is that
            // large is a valid pointer into it, and CMSG_DATA is within it.
            unsafe {
                header.msg_control = control.0.as_mut_ptr().cast();
                header.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as _;
                let message = libc::CMSG_FIRSTHDR(&header);
                (*message).cmsg_level = libc::SOL_UDP;
                (*message).cmsg_type = libc::UDP_SEGMENT;
                (*message).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                libc::CMSG_DATA(message).cast::<u16>().write_unaligned(size);
            }
        }
        headers.push(libc::mmsghdr {
            msg_hdr: header,
            msg_len: 0,
        });
    }
    // SAFETY: `headers` holds `headers.len()` initialised entries whose pointers refer to
    // `addresses`, `vectors`, `controls` and the caller's buffers, all alive and unmoved until
    // this returns; the kernel only reads them (and writes `msg_len` into `headers`).
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
    let messages = sent as usize;
    Ok(Sent {
        datagrams: runs[..messages].iter().map(|(_, count)| count).sum(),
        messages,
    })
}

/// The most datagrams one [`receive`] call reads.
pub const RECEIVE_BATCH: usize = 32;

/// The size of an [`Inbox`]'s buffers for a socket with receive offload: the largest message
/// the kernel hands over.
pub const COALESCED_SIZE: usize = 65_535;

/// Room for the datagrams one [`receive`] call reads, reused from call to call:
/// [`RECEIVE_BATCH`] buffers of one size, and the length, sender and arrival of each message
/// read, and the size of its segments where the kernel coalesced datagrams into it.
pub struct Inbox {
    buffers: Vec<u8>,
    size: usize,
    /// Datagrams larger than this are not kept (no media is).
    largest: usize,
    /// Of each message kept: its buffer's index, its length, its sender, when the kernel
    /// received it (on the system clock, since the Unix epoch) if it said so, and the size of
    /// the datagrams coalesced in it (0: one datagram).
    received: Vec<(usize, usize, SocketAddr, Option<Duration>, usize)>,
}

/// One datagram a [`receive`] call read.
#[derive(Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Its bytes.
    pub contents: &'a [u8],
    /// Its sender.
    pub from: SocketAddr,
    /// When the kernel received it, on the system clock (since the Unix epoch); `None` where
    /// arrival times are not enabled on the socket.
    pub arrived: Option<Duration>,
}

impl Inbox {
    /// Buffers of `size` bytes each: a larger datagram is not read.
    pub fn new(size: usize) -> Self {
        Self {
            buffers: vec![0; size * RECEIVE_BATCH],
            size,
            largest: size,
            received: Vec::with_capacity(RECEIVE_BATCH),
        }
    }

    /// For a socket with receive offload: buffers of [`COALESCED_SIZE`] bytes, the largest
    /// message the kernel hands over, which keep datagrams of at most `largest` bytes.
    pub fn coalescing(largest: usize) -> Self {
        Self {
            largest,
            ..Self::new(COALESCED_SIZE)
        }
    }

    /// The datagrams the last call read, in the order they arrived, coalesced ones cut apart.
    pub fn datagrams(&self) -> impl Iterator<Item = Datagram<'_>> {
        self.received
            .iter()
            .flat_map(|&(index, length, from, arrived, segment)| {
                let start = index * self.size;
                let message = &self.buffers[start..start + length];
                let (count, segment) = match segment {
                    0 => (1, length),
                    segment => (length.div_ceil(segment).max(1), segment),
                };
                (0..count).map(move |piece| {
                    let start = (piece * segment).min(length);
                    Datagram {
                        contents: &message[start..(start + segment).min(length)],
                        from,
                        arrived,
                    }
                })
            })
    }
}

/// Reads the datagrams waiting on the non-blocking `socket`, up to [`RECEIVE_BATCH`], into
/// `inbox` in one call, each with its arrival time where `options::enable_arrival_times` asked
/// for it.
/// Returns how many the kernel handed over (`WouldBlock` when none waited): a datagram larger
/// than the inbox's buffers (no media is) or from an address that is neither IPv4 nor IPv6
/// counts among them, but is not kept.
pub fn receive(socket: &impl AsRawFd, inbox: &mut Inbox) -> io::Result<usize> {
    inbox.received.clear();
    // SAFETY: all-zero `sockaddr_storage`, `iovec` and `mmsghdr` are valid values (empty
    // addresses, null buffers of length 0, no control data).
    let mut names: [libc::sockaddr_storage; RECEIVE_BATCH] = unsafe { std::mem::zeroed() };
    let mut vectors: [libc::iovec; RECEIVE_BATCH] = unsafe { std::mem::zeroed() };
    let mut headers: [libc::mmsghdr; RECEIVE_BATCH] = unsafe { std::mem::zeroed() };
    let mut controls = [Control::EMPTY; RECEIVE_BATCH];
    let size = inbox.size;
    for ((((header, vector), name), control), buffer) in headers
        .iter_mut()
        .zip(vectors.iter_mut())
        .zip(names.iter_mut())
        .zip(controls.iter_mut())
        .zip(inbox.buffers.chunks_mut(size))
    {
        *vector = libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: buffer.len(),
        };
        header.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
        header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        header.msg_hdr.msg_iov = vector;
        header.msg_hdr.msg_iovlen = 1;
        header.msg_hdr.msg_control = control.0.as_mut_ptr().cast();
        header.msg_hdr.msg_controllen = size_of::<Control>() as _;
    }
    // SAFETY: each of the `RECEIVE_BATCH` headers points to its own entry of `names`,
    // `vectors` and `controls` (on this stack) and through `vectors` to its own buffer of
    // `size` bytes in `inbox`, all alive and unmoved until this returns; the kernel writes at
    // most the lengths given.
    let count = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            RECEIVE_BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if count < 0 {
        return Err(io::Error::last_os_error());
    }
    let count = count as usize;
    for (index, (header, name)) in headers[..count].iter().zip(&names).enumerate() {
        if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            continue;
        }
        let Some(from) = socket_address(name, header.msg_hdr.msg_namelen) else {
            continue;
        };
        let length = (header.msg_len as usize).min(size);
        let (arrived, segment) = control_messages(&header.msg_hdr);
        if segment.unwrap_or(length) > inbox.largest {
            continue;
        }
        inbox
            .received
            .push((index, length, from, arrived, segment.unwrap_or(0)));
    }
    Ok(count)
}

/// What the control messages the kernel wrote for `header` say: the receive time, and the size
/// of the datagrams it coalesced into the message, if any.
fn control_messages(header: &libc::msghdr) -> (Option<Duration>, Option<usize>) {
    let (mut arrived, mut segment) = (None, None);
    if header.msg_flags & libc::MSG_CTRUNC != 0 {
        return (arrived, segment);
    }
    // SAFETY: the kernel wrote `msg_controllen` bytes of well-formed control messages into the
    // buffer `msg_control` points to, which is still alive; `CMSG_FIRSTHDR` and `CMSG_NXTHDR`
    // stay within that length, and a timestamp's data is a whole `timespec` (read unaligned).
    unsafe {
        let mut message = libc::CMSG_FIRSTHDR(header);
        while !message.is_null() {
            let kind = ((*message).cmsg_level, (*message).cmsg_type);
            if kind == (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) {
                let stamp: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(message).cast());
                arrived = u64::try_from(stamp.tv_sec)
                    .ok()
                    .zip(u32::try_from(stamp.tv_nsec).ok())
                    .map(|(seconds, nanos)| Duration::new(seconds, nanos));
            } else if kind == (libc::SOL_UDP, libc::UDP_GRO) {
                let size: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(message).cast());
                segment = usize::try_from(size).ok().filter(|size| *size > 0);
            }
            message = libc::CMSG_NXTHDR(header, message);
        }
    }
    (arrived, segment)
}

/// The address the kernel wrote into `name` (`length` bytes of it), if it is IPv4 or IPv6; read
/// by the socket library the media port is bound with.
fn socket_address(name: &libc::sockaddr_storage, length: libc::socklen_t) -> Option<SocketAddr> {
    let mut storage = socket2::SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_storage` is this platform's own type for any socket address, which
    // `view_as` allows; the kernel initialised `length` bytes of `name`, which is what
    // `SockAddr::new` reads.
    unsafe {
        *storage.view_as::<libc::sockaddr_storage>() = *name;
        socket2::SockAddr::new(storage, length)
    }
    .as_socket()
}

/// Whether `error`, from a call that had segmented messages in it, says that the kernel or the
/// device cannot segment them (rather than that one address is unreachable): a device without
/// checksum offload answers `EIO`, and a path whose MTU is smaller than the datagrams `EMSGSIZE`
/// (older kernels `EINVAL`), where each datagram alone would have gone out fragmented.
pub fn is_segmentation_error(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE)
    )
}

/// Whether this kernel takes segmented messages on `socket` at all (Linux 4.18 and later).
pub fn segmentation_supported(socket: &impl AsRawFd) -> bool {
    let mut value: libc::c_int = 0;
    let mut length = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `length` are valid for writes of the sizes given.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&mut value as *mut libc::c_int).cast(),
            &mut length,
        )
    };
    result == 0
}

/// Binds a UDP socket at `address` inside the network namespace `name` (a socket stays in the
/// namespace it was made in, whichever thread uses it later).
#[cfg(test)]
pub(crate) fn bind_in_namespace(
    name: &str,
    address: SocketAddr,
) -> io::Result<std::net::UdpSocket> {
    let path = format!("/var/run/netns/{name}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let namespace = std::fs::File::open(&path)?;
                // SAFETY: a valid descriptor of a network namespace; `setns` changes only this
                // thread's namespace, and the thread ends after binding.
                if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                std::net::UdpSocket::bind(address)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the binding thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// Sends all of `datagrams` as the node does, batch after batch; returns the messages.
    fn send_all(sender: &UdpSocket, datagrams: &[(&[u8], SocketAddr)], segment: bool) -> usize {
        let (mut sent, mut messages) = (0, 0);
        while sent < datagrams.len() {
            let call = send(sender, &datagrams[sent..], segment).unwrap();
            assert!((1..=BATCH).contains(&call.messages), "{call:?}");
            sent += call.datagrams;
            messages += call.messages;
        }
        assert_eq!(sent, datagrams.len());
        messages
    }

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
        // Every neighbour goes elsewhere: nothing to segment, one message per datagram.
        assert_eq!(send_all(&sender, &datagrams, true), 100);
        let mut buffer = [0u8; 256];
        for (i, payload) in payloads.iter().enumerate() {
            let (length, from) = receivers[i % 3].recv_from(&mut buffer).unwrap();
            assert_eq!(&buffer[..length], payload.as_slice(), "datagram {i}");
            assert_eq!(from, sender.local_addr().unwrap());
        }
    }

    /// Runs of 1,000-byte datagrams to three addresses, each run ending in a shorter one, as a
    /// flush ordered by address has them; every datagram numbered.
    fn runs(receivers: &[UdpSocket], per_receiver: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut datagrams = Vec::new();
        for (r, receiver) in receivers.iter().enumerate() {
            for i in 0..per_receiver {
                let size = if i + 1 == per_receiver { 300 } else { 1000 };
                let mut payload = vec![r as u8; size];
                payload[..2].copy_from_slice(&(i as u16).to_be_bytes());
                datagrams.push((payload, receiver.local_addr().unwrap()));
            }
        }
        datagrams
    }

    /// Reads `per_receiver` datagrams from each receiver and checks each is whole and in order.
    fn received_whole_and_in_order(receivers: &[UdpSocket], per_receiver: usize) {
        let mut buffer = [0u8; 2048];
        for (r, receiver) in receivers.iter().enumerate() {
            for i in 0..per_receiver {
                let (length, _) = receiver.recv_from(&mut buffer).unwrap();
                let size = if i + 1 == per_receiver { 300 } else { 1000 };
                assert_eq!(length, size, "receiver {r}, datagram {i}: its own size");
                assert_eq!(
                    u16::from_be_bytes([buffer[0], buffer[1]]),
                    i as u16,
                    "receiver {r}: in order"
                );
                assert!(buffer[2..length].iter().all(|byte| *byte == r as u8));
            }
        }
    }

    #[test]
    fn runs_to_one_address_go_as_one_message_and_arrive_whole_and_in_order() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let receivers: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        // 70 to each: more than one segmented message takes (64), so runs split too.
        let owned = runs(&receivers, 70);
        let datagrams: Vec<(&[u8], SocketAddr)> =
            owned.iter().map(|(p, to)| (p.as_slice(), *to)).collect();
        let messages = send_all(&sender, &datagrams, segmentation_supported(&sender));
        if segmentation_supported(&sender) {
            assert_eq!(messages, 6, "64 + 6 to each of three addresses");
        } else {
            eprintln!("this kernel cannot segment UDP: only the plain path is tested");
            assert_eq!(messages, 210);
        }
        received_whole_and_in_order(&receivers, 70);
    }

    #[test]
    fn without_segmentation_every_datagram_is_its_own_message() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let receivers: Vec<UdpSocket> = (0..2)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let owned = runs(&receivers, 10);
        let datagrams: Vec<(&[u8], SocketAddr)> =
            owned.iter().map(|(p, to)| (p.as_slice(), *to)).collect();
        assert_eq!(send_all(&sender, &datagrams, false), 20);
        received_whole_and_in_order(&receivers, 10);
    }

    #[test]
    fn runs_coalesced_by_the_kernel_are_cut_apart_whole_in_order_and_with_their_sender() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_nonblocking(true).unwrap();
        super::super::options::enable_receive_offload(&receiver).unwrap();
        super::super::options::enable_arrival_times(&receiver).unwrap();
        // 80 datagrams (50 + 30 a run, each run ending in a shorter one, each within what one
        // segmented message takes), a lone one and one too large: four messages where the
        // kernel segments and coalesces.
        let mut owned = runs(std::slice::from_ref(&receiver), 50);
        owned.extend(runs(std::slice::from_ref(&receiver), 30));
        owned.push((vec![9; 20], receiver.local_addr().unwrap()));
        let datagrams: Vec<(&[u8], SocketAddr)> =
            owned.iter().map(|(p, to)| (p.as_slice(), *to)).collect();
        let segmentation = segmentation_supported(&sender);
        send_all(&sender, &datagrams, segmentation);
        // Larger than the inbox keeps: read, and not kept.
        let to = receiver.local_addr().unwrap();
        sender.send_to(&[8; 1600], to).unwrap();
        let expected_messages = if segmentation { 4 } else { owned.len() + 1 };
        let mut inbox = Inbox::coalescing(1500);
        let (mut got, mut messages) = (Vec::new(), 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while messages < expected_messages && std::time::Instant::now() < deadline {
            match receive(&receiver, &mut inbox) {
                Ok(count) => {
                    messages += count;
                    for datagram in inbox.datagrams() {
                        assert_eq!(datagram.from, sender.local_addr().unwrap());
                        assert!(datagram.arrived.is_some(), "each has the run's arrival");
                        got.push(datagram.contents.to_vec());
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(error) => panic!("{error}"),
            }
        }
        let sent: Vec<Vec<u8>> = owned.into_iter().map(|(payload, _)| payload).collect();
        assert_eq!(got, sent, "every datagram whole, its own size, in order");
        assert_eq!(
            messages, expected_messages,
            "each run one message where it can be"
        );
        if !segmentation {
            eprintln!("this kernel cannot segment UDP: nothing was coalesced");
        }
    }

    #[test]
    fn what_waits_is_read_in_one_call_whole_in_order_and_with_its_sender() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_nonblocking(true).unwrap();
        let to = receiver.local_addr().unwrap();
        let senders: Vec<UdpSocket> = (0..2)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut inbox = Inbox::new(1500);
        assert_eq!(
            receive(&receiver, &mut inbox).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "nothing waits"
        );
        // 40 datagrams of sizes 1 to 40, alternately from two senders; the 5th too large to
        // be media.
        for i in 1..=40usize {
            let size = if i == 5 { 2000 } else { i };
            senders[i % 2].send_to(&vec![i as u8; size], to).unwrap();
        }
        let mut got: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
        let mut calls = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while calls.iter().sum::<usize>() < 40 && std::time::Instant::now() < deadline {
            match receive(&receiver, &mut inbox) {
                Ok(count) => {
                    calls.push(count);
                    got.extend(inbox.datagrams().map(|d| (d.contents.to_vec(), d.from)));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(error) => panic!("{error}"),
            }
        }
        assert_eq!(calls.iter().sum::<usize>(), 40, "{calls:?}");
        assert!(
            calls.iter().all(|count| *count <= RECEIVE_BATCH) && calls.len() >= 2,
            "at most a batch per call: {calls:?}"
        );
        let expected: Vec<(Vec<u8>, SocketAddr)> = (1..=40usize)
            .filter(|i| *i != 5)
            .map(|i| (vec![i as u8; i], senders[i % 2].local_addr().unwrap()))
            .collect();
        assert_eq!(
            got, expected,
            "every datagram but the oversized one, whole and in order"
        );
    }

    #[test]
    fn an_ipv6_sender_is_read_correctly() {
        let Ok(receiver) = UdpSocket::bind("[::1]:0") else {
            // No IPv6 loopback on this machine: nothing to check.
            return;
        };
        let sender = UdpSocket::bind("[::1]:0").unwrap();
        sender
            .send_to(b"hallo", receiver.local_addr().unwrap())
            .unwrap();
        receiver.set_nonblocking(false).unwrap();
        let mut inbox = Inbox::new(64);
        // Blocking socket, but MSG_DONTWAIT: wait for the datagram to be there first.
        let mut peek = [0u8; 8];
        receiver.peek_from(&mut peek).unwrap();
        assert_eq!(receive(&receiver, &mut inbox).unwrap(), 1);
        let got: Vec<_> = inbox.datagrams().map(|d| (d.contents, d.from)).collect();
        assert_eq!(got, [(&b"hallo"[..], sender.local_addr().unwrap())]);
    }

    #[test]
    fn a_datagram_that_waited_carries_when_it_arrived_not_when_it_was_read() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let mut inbox = Inbox::new(64);
        // Without arrival times asked for, none is made up.
        sender.send_to(b"eins", to).unwrap();
        let mut peek = [0u8; 8];
        receiver.peek_from(&mut peek).unwrap();
        assert_eq!(receive(&receiver, &mut inbox).unwrap(), 1);
        assert_eq!(inbox.datagrams().next().unwrap().arrived, None);

        super::super::options::enable_arrival_times(&receiver).unwrap();
        let since_epoch =
            |time: std::time::SystemTime| time.duration_since(std::time::UNIX_EPOCH).unwrap();
        // The kernel switches its receive clock on a moment after the first socket asks (until
        // then a datagram is stamped when read), and a busy machine may deliver late: a few
        // tries, of which one must show the wait.
        let mut tries = Vec::new();
        for _ in 0..5 {
            let sent = since_epoch(std::time::SystemTime::now());
            sender.send_to(b"zwei", to).unwrap();
            sender.send_to(b"drei", to).unwrap();
            std::thread::sleep(Duration::from_millis(150));
            let read = since_epoch(std::time::SystemTime::now());
            assert_eq!(receive(&receiver, &mut inbox).unwrap(), 2);
            let arrivals: Vec<Duration> = inbox
                .datagrams()
                .map(|d| d.arrived.expect("an arrival time with each datagram"))
                .collect();
            assert!(arrivals[0] <= arrivals[1], "in order: {arrivals:?}");
            // Received right after sending (a little slack for a coarse clock), not 150 ms
            // later when read.
            if arrivals[0] + Duration::from_millis(5) >= sent
                && arrivals[1] + Duration::from_millis(100) <= read
            {
                return;
            }
            tries.push((sent, arrivals, read));
        }
        panic!("no arrival time before the read: {tries:?}");
    }

    #[test]
    fn nothing_to_send_is_no_call_and_no_error() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(send(&sender, &[], true).unwrap().datagrams, 0);
    }

    #[test]
    fn an_ipv6_address_is_written_correctly() {
        let Ok(sender) = UdpSocket::bind("[::1]:0") else {
            // No IPv6 loopback on this machine: nothing to check.
            return;
        };
        let receiver = UdpSocket::bind("[::1]:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let datagrams: [(&[u8], SocketAddr); 2] = [(b"hallo", to), (b"hallo", to)];
        assert_eq!(send(&sender, &datagrams, true).unwrap().datagrams, 2);
        let mut buffer = [0u8; 16];
        for _ in 0..2 {
            let (length, _) = receiver.recv_from(&mut buffer).unwrap();
            assert_eq!(&buffer[..length], b"hallo");
        }
    }
}
