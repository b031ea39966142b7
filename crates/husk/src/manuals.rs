//! `husk completion SHELL` and `husk man --dir DIR`: shell completion scripts and manual pages made from the
//! command-line definitions themselves (`cli::args`), so they list exactly the commands and flags husk takes.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::args::Cli;

/// Writes the completion script for `shell` to `out`.
pub fn completion(shell: clap_complete::Shell, out: &mut dyn Write) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "husk", out);
}

/// Writes `husk.1` and one `husk-COMMAND[-SUBCOMMAND].1` per visible command into `dir` (made if missing), and
/// returns the files written, sorted. Internal (hidden) commands get no page.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut pages = Vec::new();
    let mut cmd = Cli::command();
    // Gives every subcommand its full display name (`husk-image-ls`), which names its page and its title.
    cmd.build();
    write_pages(&cmd, dir, &mut pages)?;
    pages.sort();
    Ok(pages)
}

fn write_pages(cmd: &clap::Command, dir: &Path, pages: &mut Vec<PathBuf>) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, pages)?;
    }
    let page = clap_mangen::Man::new(cmd.clone())
        .generate_to(dir)
        .with_context(|| format!("write a manual page into {}", dir.display()))?;
    pages.push(page);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every visible command, as its path of names (`["image", "ls"]`), with its visible flags (`--all`, `-a`).
    fn commands() -> Vec<(Vec<String>, Vec<String>)> {
        fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, Vec<String>)>) {
            let mut flags = Vec::new();
            for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(long) = arg.get_long() {
                    flags.push(format!("--{long}"));
                }
                if let Some(short) = arg.get_short() {
                    flags.push(format!("-{short}"));
                }
            }
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                let mut p = path.clone();
                p.push(sub.get_name().to_string());
                walk(sub, p, out);
            }
            out.push((path, flags));
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut out = Vec::new();
        walk(&cmd, Vec::new(), &mut out);
        out
    }

    #[test]
    fn the_walk_sees_commands_nested_and_flags_long_and_short() {
        let all = commands();
        let find = |path: &[&str]| {
            all.iter()
                .find(|(p, _)| p.iter().map(String::as_str).eq(path.iter().copied()))
                .map(|(_, f)| f.clone())
                .unwrap_or_else(|| panic!("no command {path:?}"))
        };
        assert!(find(&["run"]).contains(&"--detach".to_string()));
        assert!(find(&["run"]).contains(&"-d".to_string()));
        assert!(find(&["image", "ls"]).contains(&"--quiet".to_string()));
        assert!(
            find(&["image", "ls"]).contains(&"--host".to_string()),
            "global flags reach subcommands"
        );
        assert!(find(&["man"]).contains(&"--dir".to_string()));
        assert!(
            !all.iter()
                .any(|(p, _)| p.first().is_some_and(|c| c == "shim")),
            "hidden commands are not documented"
        );
        assert!(all.len() > 60, "{} commands", all.len());
    }

    #[test]
    fn every_command_and_flag_is_in_each_completion_script() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            completion(shell, &mut out);
            let script = String::from_utf8(out).unwrap();
            for (path, flags) in commands() {
                if let Some(name) = path.last() {
                    assert!(
                        script.contains(name.as_str()),
                        "{shell}: no command {path:?}"
                    );
                }
                for flag in flags {
                    // fish names a flag without its dashes: `-l detach`, `-s d`.
                    let needle = match shell {
                        clap_complete::Shell::Fish if flag.starts_with("--") => {
                            format!("-l {}", &flag[2..])
                        }
                        clap_complete::Shell::Fish => format!("-s {}", &flag[1..]),
                        _ => flag.clone(),
                    };
                    assert!(
                        script.contains(&needle),
                        "{shell}: no {needle} for {path:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_command_has_a_man_page_listing_its_flags() {
        let dir = tempfile::tempdir().unwrap();
        let pages = write_man_pages(dir.path()).unwrap();
        let commands = commands();
        assert_eq!(pages.len(), commands.len(), "one page per command");
        for (path, flags) in commands {
            let name = std::iter::once("husk".to_string())
                .chain(path.iter().cloned())
                .collect::<Vec<_>>()
                .join("-");
            let page = dir.path().join(format!("{name}.1"));
            let text = std::fs::read_to_string(&page)
                .unwrap_or_else(|e| panic!("{}: {e}", page.display()));
            // roff writes a dash as `\-`.
            assert!(
                text.contains(&format!(".TH {name} 1")),
                "{name}: title\n{text}"
            );
            for flag in flags {
                let roff = flag.replace('-', "\\-");
                assert!(text.contains(&roff), "{name}.1 lacks {flag}");
            }
        }
    }
}
