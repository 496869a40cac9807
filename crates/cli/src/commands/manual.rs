//! `tfaudit completions SHELL` and `tfaudit man`: both generated from the command line's
//! own definition, so they can never drift from `--help`.

use std::io::Write;

use clap::CommandFactory;

use crate::args::{Cli, CompletionsArgs, ManArgs, Shell};
use crate::failure::Failure;

pub fn completions(args: &CompletionsArgs) -> Result<(), Failure> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "tfaudit", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}

pub fn man(args: &ManArgs) -> Result<(), Failure> {
    let command = Cli::command();
    let Some(dir) = &args.out_dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(command).render(&mut page)?;
        let mut out = std::io::stdout().lock();
        out.write_all(&page)?;
        out.flush()?;
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        Failure::Usage(format!("cannot create {}: {e}; give --out-dir a folder you can write", dir.display()))
    })?;
    let mut written = 0;
    write_pages(&command, "tfaudit", "tfaudit", dir, &mut written)?;
    writeln!(std::io::stdout(), "wrote {written} manual pages to {}", dir.display())?;
    Ok(())
}

/// The page of `command` (named `name`, such as `tfaudit-archive-push`, and run as
/// `invoked`, such as `tfaudit archive push`) and of each of its subcommands, as
/// `name.1` files in `dir`.
fn write_pages(
    command: &clap::Command,
    name: &str,
    invoked: &str,
    dir: &std::path::Path,
    written: &mut usize,
) -> Result<(), Failure> {
    let named = command.clone().name(name.to_owned()).bin_name(invoked.to_owned()).version(env!("CARGO_PKG_VERSION"));
    let mut page = Vec::new();
    clap_mangen::Man::new(named).render(&mut page)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).map_err(|e| {
        Failure::Output(format!("cannot write {}: {e}; check the folder's permissions", path.display()))
    })?;
    *written += 1;
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let sub_name = sub.get_name();
        write_pages(sub, &format!("{name}-{sub_name}"), &format!("{invoked} {sub_name}"), dir, written)?;
    }
    Ok(())
}
