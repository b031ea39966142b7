//! What husk reads from and does to iptables itself, beside the plugins:
//!
//! - reads the `portmap` plugin's DNAT rules (`iptables-save -t nat`) to learn which host ports other CNI users
//!   (another husk daemon, podman, containerd) already forward, so a taken port fails clearly instead of being
//!   silently shadowed;
//! - removes the `bridge` plugin's masquerade rules of a sandbox when its DEL ran without the namespace:
//!   the bridge plugin of containernetworking-plugins 1.1 only removes them when it can still find the
//!   interface inside the namespace, and leaks them otherwise;
//! - guards against the `route_localnet` side effect of `portmap`: to make `127.0.0.1:PORT` forwarding work,
//!   portmap sets `net.ipv4.conf.<bridge>.route_localnet=1`, which would also let a sandbox holding
//!   `CAP_NET_RAW` reach services bound to the host's 127.0.0.1 by sending packets to 127.0.0.1 across the
//!   bridge (the CVE-2020-8558 pattern). husk drops such new connections with one rule per bridge.
//! - keeps, for every bridge network it generated, three rules per network instead of the `bridge` plugin's
//!   per-sandbox masquerade chain (`ipMasq`) and the `firewall` plugin's per-sandbox accept rules, as Docker
//!   does for its bridges: masquerade of the subnet's traffic leaving the host, and acceptance in FORWARD of
//!   what comes from the bridge and of replies and published ports going to it (so a FORWARD policy of DROP,
//!   which Docker sets, does not cut sandboxes off). A sandbox's ADD then runs no iptables command unless it
//!   publishes ports, which is most of what CNI setup used to cost.

use std::net::IpAddr;
use std::process::Command;

use husk_core::{Error, Result};

use crate::subnet::Subnet;

/// A host port forwarded by a `portmap` DNAT rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForwardedPort {
    /// `CNI_CONTAINERID` of the owner.
    pub owner: String,
    /// Its network.
    pub network: String,
    /// The host address the rule is limited to, if any.
    pub host_ip: Option<IpAddr>,
    /// Host port.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// The ports forwarded by portmap rules in the host's nat table.
pub(crate) fn forwarded_ports() -> Result<Vec<ForwardedPort>> {
    Ok(parse_forwarded_ports(&save("nat")?))
}

fn save(table: &str) -> Result<String> {
    let out = Command::new("iptables-save")
        .args(["-t", table])
        .output()
        .map_err(|e| Error::io("run iptables-save", e))?;
    if !out.status.success() {
        return Err(Error::backend(format!(
            "iptables-save -t {table} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn parse_forwarded_ports(save: &str) -> Vec<ForwardedPort> {
    // CNI-HOSTPORT-DNAT ... --comment "dnat name: \"NET\" id: \"ID\"" ... -j CNI-DN-xxx  (owner of each chain)
    let mut owners = Vec::new();
    for words in rules(save) {
        if words.get(1).map(String::as_str) == Some("CNI-HOSTPORT-DNAT")
            && let (Some(comment), Some(target)) =
                (value_after(&words, "--comment"), value_after(&words, "-j"))
            && let Some((network, owner)) =
                parse_owner_comment(comment.strip_prefix("dnat ").unwrap_or(comment))
        {
            owners.push((target.to_string(), network, owner));
        }
    }
    let mut ports = Vec::new();
    for words in rules(save) {
        let chain = &words[1];
        let Some((_, network, owner)) = owners.iter().find(|(c, _, _)| c == chain) else {
            continue;
        };
        if value_after(&words, "-j") != Some("DNAT") {
            continue;
        }
        let (Some(protocol), Some(port)) =
            (value_after(&words, "-p"), value_after(&words, "--dport"))
        else {
            continue;
        };
        let Ok(port) = port.parse() else { continue };
        let host_ip = value_after(&words, "-d")
            .and_then(|d| d.split('/').next())
            .and_then(|d| d.parse().ok());
        ports.push(ForwardedPort {
            owner: owner.clone(),
            network: network.clone(),
            host_ip,
            port,
            protocol: protocol.to_string(),
        });
    }
    ports
}

/// Removes the nat rules whose comment is `name: "NETWORK" id: "ID"` (the bridge plugin's masquerade rules)
/// and the per-sandbox chains they jump to. Returns how many rules were removed.
pub(crate) fn remove_masquerade_rules(network: &str, id: &str) -> Result<usize> {
    let script = masquerade_cleanup_script(&save("nat")?, network, id);
    if script.is_empty() {
        return Ok(0);
    }
    restore(&script)?;
    Ok(script.lines().filter(|l| l.starts_with("-D ")).count())
}

pub(crate) fn masquerade_cleanup_script(save: &str, network: &str, id: &str) -> String {
    let mut deletes = Vec::new();
    let mut chains: Vec<String> = Vec::new();
    for (line, words) in save
        .lines()
        .filter_map(|l| Some((l, split_words(l.strip_prefix("-A ")?))))
    {
        let owned = value_after(&words, "--comment").and_then(parse_owner_comment)
            == Some((network.to_string(), id.to_string()));
        if !owned {
            continue;
        }
        let target = value_after(&words, "-j").unwrap_or_default();
        // Rules inside a per-sandbox chain go with the chain; the jumps into it are deleted one by one.
        if target.starts_with("CNI-")
            && !target.starts_with("CNI-HOSTPORT")
            && !chains.iter().any(|c| c == target)
        {
            chains.push(target.to_string());
        }
        deletes.push((words[0].clone(), line.replacen("-A ", "-D ", 1)));
    }
    let mut script = String::new();
    for (chain, delete) in &deletes {
        if !chains.contains(chain) {
            script.push_str(delete);
            script.push('\n');
        }
    }
    for chain in &chains {
        script.push_str(&format!("-F {chain}\n-X {chain}\n"));
    }
    if script.is_empty() {
        script
    } else {
        format!("*nat\n{script}COMMIT\n")
    }
}

fn restore(script: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("run iptables-restore", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| Error::io("write to iptables-restore", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io("wait for iptables-restore", e))?;
    if !out.status.success() {
        return Err(Error::backend(format!(
            "iptables-restore failed: {} (input: {script:?})",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The arguments of the rule that drops new connections from `bridge` to the host's 127.0.0.0/8.
fn localnet_guard(bridge: &str) -> Vec<String> {
    let comment = format!("husk: no localnet access from {bridge}");
    [
        "INPUT",
        "-i",
        bridge,
        "-d",
        "127.0.0.0/8",
        "!",
        "-s",
        "127.0.0.0/8",
        "-m",
        "conntrack",
        "!",
        "--ctstate",
        "RELATED,ESTABLISHED,DNAT",
        "-m",
        "comment",
        "--comment",
        &comment,
        "-j",
        "DROP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Ensures the localnet guard rule for `bridge` is in the filter table's INPUT chain.
pub(crate) fn ensure_localnet_guard(bridge: &str) -> Result<()> {
    ensure(Family::V4, "filter", &localnet_guard(bridge))
        .map_err(|e| e.context(format!("add the localnet guard for bridge {bridge}")))
}

/// Removes the localnet guard rule for `bridge`; absent is fine.
pub(crate) fn remove_localnet_guard(bridge: &str) -> Result<()> {
    remove(Family::V4, "filter", &localnet_guard(bridge))
}

/// The rules husk keeps for a bridge network it generated (see the module's documentation): (table, rule).
fn network_rules(bridge: &str, subnet: &Subnet) -> Vec<(&'static str, Vec<String>)> {
    let words = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let subnet = subnet.to_string();
    let masquerade = format!("husk: masquerade {bridge}");
    let from = format!("husk: forward from {bridge}");
    let to = format!("husk: forward to {bridge}");
    vec![
        (
            "nat",
            words(&[
                "POSTROUTING",
                "-s",
                &subnet,
                "!",
                "-o",
                bridge,
                "-m",
                "comment",
                "--comment",
                &masquerade,
                "-j",
                "MASQUERADE",
            ]),
        ),
        (
            "filter",
            words(&[
                "FORWARD",
                "-i",
                bridge,
                "-m",
                "comment",
                "--comment",
                &from,
                "-j",
                "ACCEPT",
            ]),
        ),
        (
            "filter",
            words(&[
                "FORWARD",
                "-o",
                bridge,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED,DNAT",
                "-m",
                "comment",
                "--comment",
                &to,
                "-j",
                "ACCEPT",
            ]),
        ),
    ]
}

/// Ensures the masquerade and forward rules of the bridge network on `bridge` with `subnet`.
pub(crate) fn ensure_network_rules(bridge: &str, subnet: &Subnet) -> Result<()> {
    let family = Family::of(subnet);
    for (table, rule) in network_rules(bridge, subnet) {
        ensure(family, table, &rule)
            .map_err(|e| e.context(format!("add the forwarding rules of bridge {bridge}")))?;
    }
    Ok(())
}

/// Removes the masquerade and forward rules of the bridge network on `bridge` with `subnet`; absent is fine.
pub(crate) fn remove_network_rules(bridge: &str, subnet: &Subnet) -> Result<()> {
    let family = Family::of(subnet);
    for (table, rule) in network_rules(bridge, subnet) {
        remove(family, table, &rule)?;
    }
    Ok(())
}

/// Which of `iptables` and `ip6tables` a rule belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(subnet: &Subnet) -> Family {
        if subnet.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    fn command(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// Inserts `rule` (chain first) at the top of its chain unless it is there already.
fn ensure(family: Family, table: &str, rule: &[String]) -> Result<()> {
    if iptables(family, table, "-C", rule).is_ok() {
        return Ok(());
    }
    iptables(family, table, "-I", rule)
}

/// Deletes every copy of `rule` (chain first).
fn remove(family: Family, table: &str, rule: &[String]) -> Result<()> {
    while iptables(family, table, "-C", rule).is_ok() {
        iptables(family, table, "-D", rule)?;
    }
    Ok(())
}

fn iptables(family: Family, table: &str, op: &str, rule: &[String]) -> Result<()> {
    let command = family.command();
    let out = Command::new(command)
        .args(["-w", "-t", table, op])
        .args(rule)
        .output()
        .map_err(|e| Error::io(format!("run {command}"), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::backend(format!(
            "{command} -t {table} {op} {}: {}",
            rule.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `name: "NET" id: "ID"` (the plugins' comment format) -> (NET, ID).
fn parse_owner_comment(comment: &str) -> Option<(String, String)> {
    let rest = comment.strip_prefix("name: \"")?;
    let (network, rest) = rest.split_once("\" id: \"")?;
    let id = rest.strip_suffix('"')?;
    Some((network.to_string(), id.to_string()))
}

/// The `-A` rules of an `iptables-save` output as words (chain name first).
fn rules(save: &str) -> impl Iterator<Item = Vec<String>> + '_ {
    save.lines()
        .filter_map(|line| line.strip_prefix("-A "))
        .map(split_words)
        .map(|mut w| {
            w.insert(0, "-A".into());
            w
        })
}

fn value_after<'a>(words: &'a [String], flag: &str) -> Option<&'a str> {
    words
        .iter()
        .position(|w| w == flag)
        .and_then(|i| words.get(i + 1))
        .map(String::as_str)
}

/// Splits an iptables-save rule into words: spaces separate, double quotes group, backslash escapes.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_quotes = false;
    let mut has_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                    has_word = true;
                }
            }
            '"' => {
                in_quotes = !in_quotes;
                has_word = true;
            }
            ' ' if !in_quotes => {
                if has_word {
                    words.push(std::mem::take(&mut word));
                    has_word = false;
                }
            }
            c => {
                word.push(c);
                has_word = true;
            }
        }
    }
    if has_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = r#"*nat
:PREROUTING ACCEPT [0:0]
:CNI-DN-e55af72bf60c30f4e0445 - [0:0]
:CNI-e55af72bf60c30f4e0445357 - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -s 10.231.0.2/32 -m comment --comment "name: \"cnix\" id: \"abc123\"" -j CNI-e55af72bf60c30f4e0445357
-A CNI-DN-e55af72bf60c30f4e0445 -s 10.231.0.0/24 -d 127.0.0.1/32 -p tcp -m tcp --dport 18080 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-e55af72bf60c30f4e0445 -s 127.0.0.1/32 -d 127.0.0.1/32 -p tcp -m tcp --dport 18080 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-e55af72bf60c30f4e0445 -d 127.0.0.1/32 -p tcp -m tcp --dport 18080 -j DNAT --to-destination 10.231.0.2:80
-A CNI-DN-e55af72bf60c30f4e0445 -p udp -m udp --dport 53 -j DNAT --to-destination 10.231.0.2:53
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"cnix\" id: \"abc123\"" -m multiport --dports 18080 -j CNI-DN-e55af72bf60c30f4e0445
-A CNI-HOSTPORT-DNAT -p udp -m comment --comment "dnat name: \"cnix\" id: \"abc123\"" -m multiport --dports 53 -j CNI-DN-e55af72bf60c30f4e0445
-A CNI-e55af72bf60c30f4e0445357 -d 10.231.0.0/24 -m comment --comment "name: \"cnix\" id: \"abc123\"" -j ACCEPT
-A CNI-e55af72bf60c30f4e0445357 ! -d 224.0.0.0/4 -m comment --comment "name: \"cnix\" id: \"abc123\"" -j MASQUERADE
COMMIT
"#;

    #[test]
    fn words_follow_iptables_save_quoting() {
        let words =
            split_words(r#"POSTROUTING -m comment --comment "name: \"cnix\" id: \"abc\"" -j X"#);
        assert_eq!(
            words,
            [
                "POSTROUTING",
                "-m",
                "comment",
                "--comment",
                r#"name: "cnix" id: "abc""#,
                "-j",
                "X"
            ]
        );
        assert_eq!(
            parse_owner_comment(&words[4]),
            Some(("cnix".into(), "abc".into()))
        );
    }

    #[test]
    fn forwarded_ports_are_read_from_portmap_rules() {
        let ports = parse_forwarded_ports(SAVE);
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0].owner, "abc123");
        assert_eq!(ports[0].network, "cnix");
        assert_eq!(ports[0].host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!((ports[0].port, ports[0].protocol.as_str()), (18080, "tcp"));
        assert_eq!(
            (ports[1].port, ports[1].protocol.as_str(), ports[1].host_ip),
            (53, "udp", None)
        );
    }

    #[test]
    fn masquerade_cleanup_deletes_the_jump_and_the_chain() {
        let script = masquerade_cleanup_script(SAVE, "cnix", "abc123");
        assert_eq!(
            script,
            "*nat\n-D POSTROUTING -s 10.231.0.2/32 -m comment --comment \"name: \\\"cnix\\\" id: \\\"abc123\\\"\" \
             -j CNI-e55af72bf60c30f4e0445357\n-F CNI-e55af72bf60c30f4e0445357\n-X CNI-e55af72bf60c30f4e0445357\nCOMMIT\n"
        );
        assert_eq!(masquerade_cleanup_script(SAVE, "cnix", "other"), "");
        assert_eq!(masquerade_cleanup_script(SAVE, "other", "abc123"), "");
    }
}
