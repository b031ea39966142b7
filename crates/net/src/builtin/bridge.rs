//! ADD, CHECK and DEL of the built-in bridge plugin: what the reference `bridge` plugin does for the
//! configurations [`BridgeConf::parse`] accepts.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use husk_core::{Error, Result};
use serde_json::{Value, json};

use super::BridgeConf;
use super::host_local::Allocations;
use super::netlink::{Netlink, in_netns};
use crate::plugin::Invocation;

/// ADD: the bridge (made and given the gateway address if missing), an address from host-local, a veth pair
/// whose inside end is `ifname` in the sandbox with the address and the routes, its host end a port of the
/// bridge. On failure nothing of it is left (the address is released, the pair deleted).
pub(super) fn add(conf: &BridgeConf, call: &Invocation<'_>) -> Result<Value> {
    let netns = call
        .netns
        .ok_or_else(|| Error::bad_request("ADD needs the sandbox's network namespace"))?;
    let mut host = Netlink::open().map_err(|e| Error::io("open a netlink socket", e))?;
    let bridge = ensure_bridge(&mut host, conf)?;
    let ip = {
        let allocations = Allocations::lock(&conf.data_dir, &conf.network)?;
        allocations.allocate(&conf.subnet, conf.gateway, call.container_id, call.ifname)?
    };
    let attached = attach(&mut host, conf, call, netns, bridge.0, IpAddr::V4(ip));
    // Read again: a bridge takes a port's MAC when it gets its first one (the plugin reads it again too, and
    // its CHECK compares it).
    let bridge_mac = host
        .link(&conf.bridge)
        .ok()
        .flatten()
        .map_or(bridge.1, |l| l.mac);
    match attached {
        Ok((veth, inside)) => Ok(json!({
            "cniVersion": conf.cni_version,
            "interfaces": [
                {"name": conf.bridge, "mac": bridge_mac},
                {"name": veth.0, "mac": veth.1},
                {"name": call.ifname, "mac": inside, "sandbox": netns.display().to_string()},
            ],
            "ips": [{
                "address": format!("{ip}/{}", conf.subnet.prefix()),
                "gateway": conf.gateway.to_string(),
                "interface": 2,
            }],
            "routes": conf.routes.iter().map(|r| json!({"dst": r.to_string()})).collect::<Vec<_>>(),
            "dns": {},
        })),
        Err(e) => {
            if let Ok(allocations) = Allocations::lock(&conf.data_dir, &conf.network) {
                let _ = allocations.release(call.container_id, call.ifname);
            }
            Err(e)
        }
    }
}

/// The veth pair and everything on it; returns the host end's name and MAC and the inside end's MAC. Deletes
/// the pair again when a later step fails.
fn attach(
    host: &mut Netlink,
    conf: &BridgeConf,
    call: &Invocation<'_>,
    netns: &Path,
    bridge: u32,
    ip: IpAddr,
) -> Result<((String, String), String)> {
    let ns = File::open(netns)
        .map_err(|e| Error::io(format!("open network namespace {}", netns.display()), e))?;
    let mut made = None;
    for _ in 0..3 {
        let name = format!("veth{:08x}", rand::random::<u32>());
        match host.create_veth(&name, call.ifname, ns.as_raw_fd()) {
            Ok(()) => {
                made = Some(name);
                break;
            }
            // A name taken by another veth: draw again. (A taken inside name is the sandbox's own problem.)
            Err(e)
                if e.raw_os_error() == Some(libc::EEXIST)
                    && host.link(&name).ok().flatten().is_some() =>
            {
                continue;
            }
            Err(e) => {
                return Err(Error::io(
                    format!(
                        "create a veth pair with {} in {}",
                        call.ifname,
                        netns.display()
                    ),
                    e,
                ));
            }
        }
    }
    let name = made.ok_or_else(|| Error::internal("no free veth name in three draws"))?;
    let configured = (|| -> Result<((String, String), String)> {
        let veth = host
            .link(&name)
            .map_err(|e| Error::io(format!("read link {name}"), e))?
            .ok_or_else(|| Error::backend(format!("veth {name} vanished")))?;
        host.set_up(veth.index, Some(bridge))
            .map_err(|e| Error::io(format!("attach {name} to bridge {}", conf.bridge), e))?;
        if conf.hairpin {
            let path = format!("/sys/class/net/{name}/brport/hairpin_mode");
            std::fs::write(&path, "1").map_err(|e| Error::io(format!("write {path}"), e))?;
        }
        let (ifname, prefix, gateway) =
            (call.ifname.to_string(), conf.subnet.prefix(), conf.gateway);
        let routes: Vec<(IpAddr, u8)> = conf
            .routes
            .iter()
            .map(|r| (r.network(), r.prefix()))
            .collect();
        let inside_mac = in_netns(netns, move |nl| {
            let link = nl
                .link(&ifname)
                .map_err(|e| Error::io(format!("read link {ifname}"), e))?
                .ok_or_else(|| Error::backend(format!("{ifname} is not in the sandbox")))?;
            nl.add_address(link.index, ip, prefix)
                .map_err(|e| Error::io(format!("add {ip}/{prefix} to {ifname}"), e))?;
            nl.set_up(link.index, None)
                .map_err(|e| Error::io(format!("bring {ifname} up"), e))?;
            for (dst, dst_prefix) in routes {
                nl.add_route(dst, dst_prefix, gateway, link.index)
                    .map_err(|e| {
                        Error::io(
                            format!("add a route to {dst}/{dst_prefix} via {gateway}"),
                            e,
                        )
                    })?;
            }
            Ok(link.mac)
        })?;
        Ok(((name.clone(), veth.mac), inside_mac))
    })();
    if configured.is_err()
        && let Ok(Some(veth)) = host.link(&name)
    {
        let _ = host.delete_link(veth.index);
    }
    configured
}

/// The bridge's index and MAC; made, brought up and given the gateway address when missing, and the host
/// made to forward IPv4 (what the plugin's `isGateway` does).
fn ensure_bridge(host: &mut Netlink, conf: &BridgeConf) -> Result<(u32, String)> {
    let name = &conf.bridge;
    let bridge = match host
        .link(name)
        .map_err(|e| Error::io(format!("read link {name}"), e))?
    {
        Some(link) => link,
        None => {
            // A random, locally administered unicast address.
            let mut mac: [u8; 6] = rand::random();
            mac[0] = (mac[0] & 0xfe) | 0x02;
            host.create_bridge(name, mac)
                .map_err(|e| Error::io(format!("create bridge {name}"), e))?;
            host.link(name)
                .map_err(|e| Error::io(format!("read link {name}"), e))?
                .ok_or_else(|| Error::backend(format!("bridge {name} vanished")))?
        }
    };
    let prefix = conf.subnet.prefix();
    let addresses = host
        .addresses(bridge.index)
        .map_err(|e| Error::io(format!("read the addresses of {name}"), e))?;
    if !addresses.contains(&(conf.gateway, prefix)) {
        host.add_address(bridge.index, conf.gateway, prefix)
            .map_err(|e| Error::io(format!("add {}/{prefix} to bridge {name}", conf.gateway), e))?;
    }
    host.set_up(bridge.index, None)
        .map_err(|e| Error::io(format!("bring bridge {name} up"), e))?;
    let forward = Path::new("/proc/sys/net/ipv4/ip_forward");
    if std::fs::read_to_string(forward)
        .map(|s| s.trim() != "1")
        .unwrap_or(true)
    {
        std::fs::write(forward, "1").map_err(|e| Error::io("turn IPv4 forwarding on", e))?;
    }
    Ok((bridge.index, bridge.mac))
}

/// CHECK: the sandbox's interface is there with its address, the host end is a port of the bridge.
pub(super) fn check(conf: &BridgeConf, call: &Invocation<'_>) -> Result<()> {
    let netns = call
        .netns
        .ok_or_else(|| Error::bad_request("CHECK needs the sandbox's network namespace"))?;
    let result = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| Error::bad_request("CHECK needs the attachment's result (prevResult)"))?;
    let address = result["ips"][0]["address"].as_str().unwrap_or_default();
    let (ip, prefix) = address
        .split_once('/')
        .and_then(|(ip, p)| Some((ip.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?)))
        .ok_or_else(|| Error::bad_request(format!("prevResult has no address ({address:?})")))?;
    let veth = result["interfaces"][1]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut host = Netlink::open().map_err(|e| Error::io("open a netlink socket", e))?;
    let bridge = host
        .link(&conf.bridge)
        .map_err(|e| Error::io(format!("read link {}", conf.bridge), e))?
        .ok_or_else(|| Error::backend(format!("bridge {} is missing", conf.bridge)))?;
    let port = host
        .link(&veth)
        .map_err(|e| Error::io(format!("read link {veth}"), e))?
        .ok_or_else(|| Error::backend(format!("the sandbox's host interface {veth} is missing")))?;
    if port.controller != Some(bridge.index) {
        return Err(Error::backend(format!(
            "{veth} is not a port of bridge {}",
            conf.bridge
        )));
    }
    let ifname = call.ifname.to_string();
    let shown = netns.display().to_string();
    in_netns(netns, move |nl| {
        let link = nl
            .link(&ifname)
            .map_err(|e| Error::io(format!("read link {ifname}"), e))?
            .ok_or_else(|| Error::backend(format!("interface {ifname} not found in {shown}")))?;
        let addresses = nl
            .addresses(link.index)
            .map_err(|e| Error::io(format!("read the addresses of {ifname}"), e))?;
        if !addresses.contains(&(ip, prefix)) {
            return Err(Error::backend(format!(
                "{ifname} does not have {ip}/{prefix}"
            )));
        }
        Ok(())
    })
}

/// DEL: the address released and the sandbox's interface deleted (its host end goes with it); what is already
/// gone, the namespace included, is fine.
pub(super) fn del(conf: &BridgeConf, call: &Invocation<'_>) -> Result<()> {
    Allocations::lock(&conf.data_dir, &conf.network)?.release(call.container_id, call.ifname)?;
    let Some(netns) = call.netns.filter(|p| p.exists()) else {
        return Ok(());
    };
    let ifname = call.ifname.to_string();
    let netns: PathBuf = netns.to_path_buf();
    in_netns(&netns, move |nl| {
        if let Some(link) = nl
            .link(&ifname)
            .map_err(|e| Error::io(format!("read link {ifname}"), e))?
        {
            match nl.delete_link(link.index) {
                Err(e) if e.raw_os_error() != Some(libc::ENODEV) => {
                    return Err(Error::io(format!("delete {ifname}"), e));
                }
                _ => {}
            }
        }
        Ok(())
    })
}
