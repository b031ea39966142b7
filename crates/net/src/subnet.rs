//! IP subnets in CIDR notation: the little arithmetic husk needs for networks (parse, contain, overlap, the
//! first host address). Small enough that a dependency would not pay for itself.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use husk_core::{Error, Result};

/// An IPv4 or IPv6 subnet, normalised to its network address (`10.88.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: IpAddr,
    prefix: u8,
}

impl Subnet {
    /// Parses `ADDRESS/PREFIX`; host bits must be zero (`10.88.0.5/16` is refused, as CNI's host-local does).
    pub fn parse(text: &str) -> Result<Subnet> {
        let bad = |why: &str| Error::invalid("subnet", format!("invalid subnet {text:?}: {why}"));
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| bad("expected ADDRESS/PREFIX, e.g. 10.89.0.0/24"))?;
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| bad("the prefix is not a number"))?;
        if u32::from(prefix) > bits(addr) {
            return Err(bad("the prefix is longer than the address"));
        }
        let subnet = Subnet {
            network: addr,
            prefix,
        };
        if subnet.first() != to_u128(addr) {
            return Err(bad("host bits are set; write the network address"));
        }
        Ok(subnet)
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether this is an IPv4 subnet.
    pub fn is_ipv4(&self) -> bool {
        self.network.is_ipv4()
    }

    /// Whether `ip` is inside the subnet (same family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4() && (self.first()..=self.last()).contains(&to_u128(ip))
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.is_ipv4() == other.is_ipv4()
            && self.first() <= other.last()
            && other.first() <= self.last()
    }

    /// The `n`th address after the network address (`n = 1` is the usual gateway), if inside the subnet and not
    /// the IPv4 broadcast address.
    pub fn host(&self, n: u128) -> Option<IpAddr> {
        let value = self.first().checked_add(n)?;
        let last_usable = if self.is_ipv4() && self.prefix < 31 {
            self.last() - 1
        } else {
            self.last()
        };
        (n > 0 && value <= last_usable).then(|| from_u128(value, self.is_ipv4()))
    }

    /// Whether `ip` may be given to a host in the subnet (inside it, not the network or broadcast address).
    pub fn is_usable_host(&self, ip: IpAddr) -> bool {
        self.contains(ip)
            && to_u128(ip) > self.first()
            && self.host(to_u128(ip) - self.first()).is_some()
    }

    fn first(&self) -> u128 {
        to_u128(self.network) & self.mask()
    }

    fn last(&self) -> u128 {
        self.first() | !self.mask() & max(self.is_ipv4())
    }

    fn mask(&self) -> u128 {
        let total = bits(self.network);
        let host_bits = total - u32::from(self.prefix);
        let all = max(self.is_ipv4());
        if host_bits >= 128 {
            0
        } else {
            all & !((1u128 << host_bits) - 1)
        }
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn bits(addr: IpAddr) -> u32 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn max(v4: bool) -> u128 {
    if v4 { u128::from(u32::MAX) } else { u128::MAX }
}

fn to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(value: u128, v4: bool) -> IpAddr {
    if v4 {
        // Values of an IPv4 subnet never exceed u32::MAX (see `last`).
        IpAddr::V4(Ipv4Addr::from(value as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_normalises() {
        let s = Subnet::parse("10.88.0.0/16").unwrap();
        assert_eq!(s.to_string(), "10.88.0.0/16");
        assert_eq!(s.host(1), Some(ip("10.88.0.1")));
        assert_eq!(s.host(65534), Some(ip("10.88.255.254")));
        assert_eq!(s.host(65535), None, "broadcast");
        assert!(Subnet::parse("10.88.0.1/16").is_err());
        assert!(Subnet::parse("10.88.0.0/33").is_err());
        assert!(Subnet::parse("10.88.0.0").is_err());
        assert!(Subnet::parse("fd00::/64").is_ok());
        assert!(Subnet::parse("0.0.0.0/0").is_ok());
    }

    #[test]
    fn contains_and_overlaps() {
        let a = Subnet::parse("10.88.0.0/16").unwrap();
        let b = Subnet::parse("10.88.3.0/24").unwrap();
        let c = Subnet::parse("10.89.0.0/24").unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(a.contains(ip("10.88.200.1")));
        assert!(!a.contains(ip("10.89.0.1")));
        assert!(!a.contains(ip("::1")));
        assert!(a.is_usable_host(ip("10.88.0.1")));
        assert!(!a.is_usable_host(ip("10.88.0.0")));
        assert!(!a.is_usable_host(ip("10.88.255.255")));
        let v6 = Subnet::parse("fd00:1::/64").unwrap();
        assert!(v6.is_usable_host(ip("fd00:1::1")));
        assert!(!v6.overlaps(&a));
    }
}
