//! `generate`: the man pages and the shell completion scripts, made from
//! the command line's own clap definition (`Cli`), so that they cannot
//! drift from it. `cargo xtask dist` runs it on the binary it ships.
//!
//! It is for packagers, not users, so it is not part of `Cli`: `main`
//! parses it apart (with [`GenerateCli`]) when the first argument is
//! `generate`. A hidden subcommand of `Cli` would stay out of `--help` and
//! the man pages, but clap_complete would still complete it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap_complete::Shell;

/// Generate the man pages or a shell's completion script from the command
/// line's definition (for packagers; `cargo xtask dist` runs it).
#[derive(clap::Parser, Debug)]
#[command(name = "generate", bin_name = "braze-mixpanel-bridge generate")]
pub(crate) struct GenerateCli {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand, Debug)]
enum What {
    /// Man pages (roff): braze-mixpanel-bridge.1 and one page per
    /// subcommand (braze-mixpanel-bridge-serve.1, …), written into DIR.
    Man {
        /// The directory to write the pages into; created if missing.
        dir: PathBuf,
    },
    /// The bash completion script, on stdout.
    CompleteBash,
    /// The zsh completion script (install it as `_braze-mixpanel-bridge`), on stdout.
    CompleteZsh,
    /// The fish completion script, on stdout.
    CompleteFish,
}

/// The name every page and script is generated for.
const BIN_NAME: &str = "braze-mixpanel-bridge";

pub(crate) fn run(args: GenerateCli, command: clap::Command) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Man { dir } => {
            man_pages(command, &dir)?;
        }
        What::CompleteBash => print(&completion(Shell::Bash, command))?,
        What::CompleteZsh => print(&completion(Shell::Zsh, command))?,
        What::CompleteFish => print(&completion(Shell::Fish, command))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the man page of the command and of each subcommand, at every
/// depth, into `dir`.
fn man_pages(command: clap::Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(command.bin_name(BIN_NAME), dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))
}

/// The completion script for `shell`.
fn completion(shell: Shell, mut command: clap::Command) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, BIN_NAME, &mut script);
    if shell == Shell::Bash {
        fix_bash_states(&mut script);
    }
    script
}

/// clap_complete's bash script names its states for the subcommands in two
/// ways when the binary's name holds a hyphen, so that below the top level
/// nothing completes (clap-rs/clap issue 6421, open in clap_complete
/// 4.6.12): its dispatch loop arrives at `braze__mixpanel__bridge__subcmd__serve`,
/// its case arms wait for `braze__subcmd__mixpanel__subcmd__bridge__subcmd__serve`.
/// This spells the arms as the loop does; once clap_complete is fixed it
/// changes nothing. `bash_completes_with_the_script` checks the result.
fn fix_bash_states(script: &mut Vec<u8>) {
    let text = String::from_utf8_lossy(script);
    let fixed = text.replace(
        &BIN_NAME.replace('-', "__subcmd__"),
        &BIN_NAME.replace('-', "__"),
    );
    *script = fixed.into_bytes();
}

fn print(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    /// Every visible subcommand's page name, at every depth, depth first.
    fn expected_pages(command: &clap::Command, prefix: &str, pages: &mut Vec<String>) {
        pages.push(format!("{prefix}.1"));
        for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            expected_pages(sub, &format!("{prefix}-{}", sub.get_name()), pages);
        }
    }

    #[test]
    fn writes_one_man_page_per_visible_command() {
        let dir = std::env::temp_dir().join(format!(
            "bmb-generate-man-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        man_pages(crate::Cli::command(), &dir).unwrap();

        let mut expected = Vec::new();
        expected_pages(&crate::Cli::command(), BIN_NAME, &mut expected);
        expected.sort();
        let mut written: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        written.sort();
        assert_eq!(written, expected);
        assert!(written.contains(&"braze-mixpanel-bridge-dlq-replay.1".to_owned()));
        assert!(!written.iter().any(|page| page.contains("generate")));

        let top = std::fs::read_to_string(dir.join("braze-mixpanel-bridge.1")).unwrap();
        assert!(top.contains(".TH braze-mixpanel-bridge 1"), "{top}");
        assert!(
            top.contains("braze\\-mixpanel\\-bridge\\-serve(1)"),
            "{top}"
        );
        assert!(!top.contains("generate"), "{top}");
        let serve = std::fs::read_to_string(dir.join("braze-mixpanel-bridge-serve.1")).unwrap();
        assert!(serve.contains("\\-\\-data\\-dir"), "{serve}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn completions_know_the_commands_and_their_flags_but_not_generate() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = String::from_utf8(completion(shell, crate::Cli::command())).unwrap();
            for word in ["serve", "transform", "check-config", "dlq", "data-dir"] {
                assert!(script.contains(word), "{shell}: no {word}");
            }
            assert!(!script.contains("generate"), "{shell}");
        }
    }

    /// Bash itself loads the script and completes a subcommand and a flag
    /// with it, called as bash's `complete -F` calls it (command, word,
    /// previous word).
    #[test]
    fn bash_completes_with_the_script() {
        let script = completion(Shell::Bash, crate::Cli::command());
        let path = std::env::temp_dir().join(format!("bmb-completion-{}.bash", std::process::id()));
        std::fs::write(&path, script).unwrap();
        let complete = |words: &str| {
            let output = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
                     _braze__mixpanel__bridge braze-mixpanel-bridge \"${{COMP_WORDS[COMP_CWORD]}}\" \
                     \"${{COMP_WORDS[COMP_CWORD-1]}}\"; echo \"${{COMPREPLY[*]}}\"",
                    path.display()
                ))
                .output()
                .expect("bash runs");
            assert!(output.status.success(), "{output:?}");
            String::from_utf8(output.stdout).unwrap().trim().to_owned()
        };
        assert_eq!(complete("braze-mixpanel-bridge ser"), "serve");
        assert_eq!(
            complete("braze-mixpanel-bridge serve --data-"),
            "--data-dir"
        );
        assert_eq!(complete("braze-mixpanel-bridge dlq re"), "replay");
        std::fs::remove_file(&path).unwrap();
    }

    /// Fish, where it is installed, completes with its script too (the
    /// zsh script was checked by hand through zpty: docs/releasing.md).
    #[test]
    fn fish_completes_with_the_script_where_fish_is_installed() {
        if std::process::Command::new("fish")
            .arg("--version")
            .output()
            .is_err()
        {
            return;
        }
        let script = completion(Shell::Fish, crate::Cli::command());
        let path = std::env::temp_dir().join(format!("bmb-completion-{}.fish", std::process::id()));
        std::fs::write(&path, script).unwrap();
        let complete = |line: &str| {
            let output = std::process::Command::new("fish")
                .arg("--no-config")
                .arg("-c")
                .arg(format!("source {}; complete -C '{line}'", path.display()))
                .output()
                .expect("fish runs");
            assert!(output.status.success(), "{output:?}");
            let text = String::from_utf8(output.stdout).unwrap();
            text.lines()
                .map(|line| line.split('\t').next().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(complete("braze-mixpanel-bridge ser"), ["serve"]);
        assert_eq!(
            complete("braze-mixpanel-bridge serve --data"),
            ["--data-dir"]
        );
        assert_eq!(complete("braze-mixpanel-bridge dlq re"), ["replay"]);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn generate_is_not_in_the_documented_command_line() {
        let help = crate::Cli::command().render_long_help().to_string();
        assert!(help.contains("serve"), "{help}");
        assert!(!help.contains("generate"), "{help}");
        assert!(crate::Cli::command().find_subcommand("generate").is_none());
    }

    #[test]
    fn parses_its_own_arguments() {
        use clap::Parser as _;
        let args = GenerateCli::try_parse_from(["generate", "man", "out"]).unwrap();
        assert!(matches!(args.what, What::Man { dir } if dir == Path::new("out")));
        let args = GenerateCli::try_parse_from(["generate", "complete-zsh"]).unwrap();
        assert!(matches!(args.what, What::CompleteZsh));
        assert!(GenerateCli::try_parse_from(["generate", "complete-tcsh"]).is_err());
        assert!(GenerateCli::try_parse_from(["generate", "man"]).is_err());
    }
}
