//! The few rtnetlink requests the built-in bridge plugin makes: links (bridge, veth pair, up, controller),
//! addresses and a route, each sent with an acknowledgement asked for and answered before the next.
//!
//! A netlink socket belongs to the network namespace of the thread that made it, so [`in_netns`] runs work on a
//! short-lived thread of its own that entered the sandbox's namespace; no other thread of the daemon ever does.

use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::path::Path;

use husk_core::{Error, Result};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_ROUTE;

/// An rtnetlink socket of the calling thread's network namespace.
pub(crate) struct Netlink {
    socket: Socket,
    sequence: u32,
}

/// A link's index and hardware address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    /// Interface index.
    pub index: u32,
    /// MAC address as `aa:bb:cc:dd:ee:ff` (empty when the link has none).
    pub mac: String,
    /// Index of the bridge (or other controller) the link is a port of.
    pub controller: Option<u32>,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub(crate) fn open() -> io::Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        Ok(Netlink {
            socket,
            sequence: 0,
        })
    }

    /// Sends `message` with `flags` (plus REQUEST and ACK) and returns what the kernel answered before its
    /// acknowledgement (or the end of a dump). A negative acknowledgement is its errno.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;
        let mut answers = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = self.socket.recv(&mut &mut buf[..], 0)?;
            let mut offset = 0;
            while offset < n {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..n])
                    .map_err(|e| io::Error::other(format!("an answer netlink cannot read: {e}")))?;
                let length = reply.header.length as usize;
                if reply.header.sequence_number == self.sequence {
                    match reply.payload {
                        NetlinkPayload::Error(e) if e.code.is_none() => return Ok(answers),
                        NetlinkPayload::Error(e) => {
                            return Err(io::Error::from_raw_os_error(-e.raw_code()));
                        }
                        NetlinkPayload::Done(_) => return Ok(answers),
                        NetlinkPayload::InnerMessage(m) => answers.push(m),
                        _ => {}
                    }
                }
                if length == 0 {
                    break;
                }
                offset += length;
            }
        }
    }

    /// The link named `name`, or `None` when there is none.
    pub(crate) fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(message), 0) {
            Ok(answers) => Ok(answers.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(link_of(&link)),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates Linux bridge `name` with hardware address `mac`; one that exists already is fine. A bridge made
    /// without one takes the lowest of its ports' addresses, and changes it as ports come and go (what the
    /// plugin binary's CHECK then trips on); one given an address keeps it.
    pub(crate) fn create_bridge(&mut self, name: &str, mac: [u8; 6]) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::Address(mac.to_vec()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
        ];
        match self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Creates a veth pair: `name` in this namespace, its peer `peer` made straight in the namespace open at
    /// `peer_netns`.
    pub(crate) fn create_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_netns: RawFd,
    ) -> io::Result<()> {
        let mut inside = LinkMessage::default();
        inside.attributes = vec![
            LinkAttribute::IfName(peer.to_string()),
            LinkAttribute::NetNsFd(peer_netns),
        ];
        let mut message = LinkMessage::default();
        message.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(inside))),
            ]),
        ];
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Brings link `index` up and, with `controller`, makes it a port of that bridge.
    pub(crate) fn set_up(&mut self, index: u32, controller: Option<u32>) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        if let Some(controller) = controller {
            message
                .attributes
                .push(LinkAttribute::Controller(controller));
        }
        self.request(RouteNetlinkMessage::SetLink(message), 0)
            .map(drop)
    }

    /// Deletes link `index` (a veth's peer goes with it).
    pub(crate) fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(message), 0)
            .map(drop)
    }

    /// The addresses (with prefix lengths) of link `index`.
    pub(crate) fn addresses(&mut self, index: u32) -> io::Result<Vec<(IpAddr, u8)>> {
        let answers = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    a.attributes.iter().find_map(|attr| match attr {
                        AddressAttribute::Address(ip) => Some((*ip, a.header.prefix_len)),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Adds `address/prefix` to link `index`; the same address already there is fine.
    pub(crate) fn add_address(
        &mut self,
        index: u32,
        address: IpAddr,
        prefix: u8,
    ) -> io::Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = family(address);
        message.header.prefix_len = prefix;
        message.header.index = index;
        message.attributes = vec![
            AddressAttribute::Local(address),
            AddressAttribute::Address(address),
        ];
        if let IpAddr::V4(v4) = address {
            let host_bits = 32 - u32::from(prefix);
            let mask = if host_bits >= 32 {
                u32::MAX
            } else {
                (1u32 << host_bits) - 1
            };
            message
                .attributes
                .push(AddressAttribute::Broadcast((u32::from(v4) | mask).into()));
        }
        match self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Adds a route to `destination/prefix` through `gateway` on link `index`.
    pub(crate) fn add_route(
        &mut self,
        destination: IpAddr,
        prefix: u8,
        gateway: IpAddr,
        index: u32,
    ) -> io::Result<()> {
        let mut message = RouteMessage::default();
        message.header = RouteHeader {
            address_family: family(gateway),
            destination_prefix_length: prefix,
            table: RouteHeader::RT_TABLE_MAIN,
            protocol: RouteProtocol::Boot,
            scope: RouteScope::Universe,
            kind: RouteType::Unicast,
            ..RouteHeader::default()
        };
        if prefix > 0 {
            message
                .attributes
                .push(RouteAttribute::Destination(RouteAddress::from(destination)));
        }
        message
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gateway)));
        message.attributes.push(RouteAttribute::Oif(index));
        self.request(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn link_of(message: &LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        mac: String::new(),
        controller: None,
    };
    for attr in &message.attributes {
        match attr {
            LinkAttribute::Address(bytes) => {
                link.mac = bytes
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":");
            }
            LinkAttribute::Controller(index) => link.controller = Some(*index),
            _ => {}
        }
    }
    link
}

/// Runs `work` with a netlink socket of the network namespace at `netns`, on a thread of its own that entered
/// it and exits afterwards ([`crate::netns::on_thread_in`]).
pub(crate) fn in_netns<T: Send + 'static>(
    netns: &Path,
    work: impl FnOnce(&mut Netlink) -> Result<T> + Send + 'static,
) -> Result<T> {
    let shown = netns.display().to_string();
    crate::netns::on_thread_in(Some(netns), move || {
        let mut netlink =
            Netlink::open().map_err(|e| Error::io(format!("netlink in {shown}"), e))?;
        work(&mut netlink)
    })
}
