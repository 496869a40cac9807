//! Tamper evidence: `keygen`, `checkpoint`, `verify`, `prove`, `verify-proof`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use tfaudit_backend::Mode;
use tfaudit_integrity::{CheckpointMade, IntegrityError, NoteSigner, NoteVerifier, VerifyOptions};

use crate::args::{CheckpointArgs, Cli, KeygenArgs, ProveArgs, VerifyArgs, VerifyProofArgs};
use crate::failure::Failure;
use crate::output::terminal_safe;
use crate::settings;

impl From<IntegrityError> for Failure {
    fn from(e: IntegrityError) -> Self {
        match e {
            IntegrityError::Store(e) => e.into(),
            IntegrityError::Note(e) => Failure::Usage(e.to_string()),
            IntegrityError::Invalid(m) => Failure::Mismatch(m),
            IntegrityError::NotFound(m) => Failure::Usage(m),
            e @ IntegrityError::Write(_) => Failure::Output(e.to_string()),
        }
    }
}

fn write_new_file(path: &Path, text: &str, mode: u32) -> Result<(), Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Failure::Usage(format!("{} exists; choose another --out, or remove it first", path.display()))
        } else {
            Failure::Output(format!("cannot create {}: {e}", path.display()))
        }
    })?;
    f.write_all(text.as_bytes()).map_err(|e| Failure::Output(format!("cannot write {}: {e}", path.display())))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

pub fn keygen(cli: &Cli, args: &KeygenArgs) -> Result<(), Failure> {
    let signer = NoteSigner::generate(&args.name).map_err(|e| Failure::Usage(format!("--name: {e}")))?;
    let public = with_suffix(&args.out, ".pub");
    if public.exists() {
        return Err(Failure::Usage(format!("{} exists; choose another --out, or remove it first", public.display())));
    }
    write_new_file(&args.out, &format!("{}\n", signer.encode_private()), 0o600)?;
    write_new_file(&public, &format!("{}\n", signer.verifier().encode()), 0o644)?;
    if !cli.quiet {
        let mut out = crate::output::Stdout::new();
        writeln!(
            out,
            "private key: {} (keep it secret; [integrity] signing_key = {{ file = \"...\" }})",
            args.out.display()
        )?;
        writeln!(out, "public key:  {}", public.display())?;
        writeln!(out, "{}", signer.verifier().encode())?;
    }
    Ok(())
}

pub fn checkpoint(cli: &Cli, args: &CheckpointArgs) -> Result<(), Failure> {
    let config = settings::config(cli)?;
    let checkpointer = settings::checkpointer(config.as_ref())?;
    let store = settings::open_archive(cli, config.as_ref(), Mode::MustExist)?;
    let sink = settings::checkpoint_sink(config.as_ref(), &[])?;
    let made = checkpointer.run(&*store, Timestamp::now())?;
    if checkpointer.webhook.is_some() || sink.is_some() {
        let client = tfaudit_service::checkpoints::copy_client();
        crate::runtime()?
            .block_on(tfaudit_service::checkpoints::send_new(&client, &checkpointer, sink.as_ref(), &made))
            .map_err(Failure::Api)?;
    }
    let mut out = crate::output::Stdout::new();
    let cp = match made {
        CheckpointMade::Empty => {
            if !cli.quiet {
                writeln!(out, "the archive holds no event yet: nothing to checkpoint")?;
            }
            return Ok(());
        }
        CheckpointMade::New(cp) | CheckpointMade::Current(cp) => cp,
    };
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&cp).map_err(|e| Failure::Internal(e.to_string()))?)?;
    } else if !cli.quiet {
        // Line by line: the lines are shown escaped, the newlines between them kept.
        for line in cp.note.split_terminator('\n') {
            writeln!(out, "{}", terminal_safe(line))?;
        }
        if cp.signed_by.is_none() {
            writeln!(out, "(unsigned: set [integrity] signing_key or TFAUDIT_SIGNING_KEY to sign checkpoints)")?;
        }
    }
    Ok(())
}

/// A public key given as the key itself or as a file holding it.
fn public_key(given: &str) -> Result<NoteVerifier, Failure> {
    if let Ok(k) = NoteVerifier::parse(given) {
        return Ok(k);
    }
    let path = Path::new(given);
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("--key: cannot read {}: {e}", path.display())))?;
        return NoteVerifier::parse(&text).map_err(|e| Failure::Usage(format!("--key {}: {e}", path.display())));
    }
    Err(Failure::Usage(NoteVerifier::parse(given).err().map_or_else(
        || "--key: not a public key".to_owned(),
        |e| format!("--key: {e} (or the path of a file holding one)"),
    )))
}

fn external_checkpoints(paths: &[PathBuf]) -> Result<Vec<(String, String)>, Failure> {
    let mut out = Vec::new();
    for p in paths {
        let read = |f: &Path| {
            std::fs::read_to_string(f).map_err(|e| Failure::Usage(format!("--from: cannot read {}: {e}", f.display())))
        };
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Failure::Usage(format!("--from: cannot read {}: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "checkpoint"))
                .collect();
            files.sort();
            for f in files {
                out.push((f.display().to_string(), read(&f)?));
            }
        } else {
            out.push((p.display().to_string(), read(p)?));
        }
    }
    Ok(out)
}

pub fn verify(cli: &Cli, args: &VerifyArgs) -> Result<(), Failure> {
    let key = args.key.as_deref().map(public_key).transpose()?;
    let external = external_checkpoints(&args.from)?;
    let config = settings::config(cli)?;
    let store = settings::open_archive(cli, config.as_ref(), Mode::MustExist)?;
    let show_bar = !cli.quiet && !args.json && std::io::stderr().is_terminal();
    let bar = show_bar.then(|| {
        let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "verifying [{bar:30}] {human_pos}/{human_len} events, {elapsed} ({eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    // The copies of days removed by retention, read from cold storage as they come up.
    // A location given is checked now (a bad one is a usage error) but opened only when
    // a pruned day comes up: an archive that pruned nothing verifies without touching
    // cold storage, its credentials or its directory.
    let configured = args.cold.is_some() || config.as_ref().is_some_and(|(_, f)| f.archive.location.is_some());
    let fixed = if configured && !args.no_cold {
        Some(settings::cold_location(args.cold.as_deref(), config.as_ref())?)
    } else {
        None
    };
    let fixed_target = std::cell::OnceCell::new();
    let runtime = crate::runtime()?;
    let read_copy = |day: &tfaudit_store::PrunedDay| -> Result<Vec<(i64, tfaudit_integrity::Hash)>, String> {
        let opened;
        let target = match &fixed {
            Some((location, s3)) => match fixed_target.get() {
                Some(t) => t,
                None => {
                    let t = location.open(s3).map_err(|e| e.to_string())?;
                    fixed_target.get_or_init(|| t)
                }
            },
            None => {
                let (location, s3) =
                    settings::cold_location(Some(&day.location), config.as_ref()).map_err(|e| e.to_string())?;
                opened = location.open(&s3).map_err(|e| e.to_string())?;
                &opened
            }
        };
        let events = runtime.block_on(tfaudit_cold::read_copy(target, day)).map_err(|e| e.to_string())?;
        Ok(events
            .iter()
            .map(|e| (e.seq, tfaudit_integrity::event_leaf_hash(e.seq, &e.source, e.event.raw.as_bytes())))
            .collect())
    };
    let copies: Option<&tfaudit_integrity::CopyReader<'_>> = (!args.no_cold).then_some(&read_copy);
    let options = VerifyOptions { key: key.as_ref(), external, quick: args.quick, copies };
    let report = tfaudit_integrity::verify(&*store, &options, &mut |done, total| {
        if let Some(b) = &bar {
            b.set_length(total.max(done));
            b.set_position(done);
        }
    })?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let mut out = crate::output::Stdout::new();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report).map_err(|e| Failure::Internal(e.to_string()))?)?;
    } else if !cli.quiet || report.finding.is_some() {
        let origin =
            report.origin.as_deref().map_or_else(|| "(no tree yet)".to_owned(), |o| terminal_safe(o).into_owned());
        writeln!(
            out,
            "archive {origin}: {} events checked (tree entries {}..{}), {} checkpoints matched ({} from outside the archive)",
            report.events_checked,
            report.from_size,
            report.tree_size,
            report.checkpoints_checked,
            report.external_checkpoints
        )?;
        let unsigned = if report.unsigned_checkpoints > 0 {
            format!("; {} checkpoints are unsigned (made without a signing key)", report.unsigned_checkpoints)
        } else {
            String::new()
        };
        match (&key, report.signatures_checked) {
            (Some(k), n) => writeln!(out, "signatures: {n} checked against {}{unsigned}", k.encode())?,
            (None, _) => writeln!(out, "signatures: not checked (give --key with the archive's public key){unsigned}")?,
        }
        if report.pruned_events > 0 {
            let copies = if report.copies_unchecked > 0 {
                format!(
                    "their copies in cold storage were not read ({} days; drop --no-cold to read them)",
                    report.copies_unchecked
                )
            } else {
                format!("the copies of {} days in cold storage read and matched", report.copies_checked)
            };
            writeln!(
                out,
                "{} events removed by [retention] keep_local checked by their archived leaves; {copies}",
                report.pruned_events
            )?;
        }
        if report.pending_events > 0 {
            writeln!(out, "{} events stored since the last checkpoint are not in the tree yet", report.pending_events)?;
        }
    }
    match &report.finding {
        None => {
            if !cli.quiet && !args.json {
                writeln!(out, "verified: nothing was changed, deleted, inserted or reordered")?;
            }
            Ok(())
        }
        Some(f) => Err(Failure::Mismatch(format!(
            "{}: {}",
            serde_json::to_value(f.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            terminal_safe(&f.message)
        ))),
    }
}

pub fn prove(cli: &Cli, args: &ProveArgs) -> Result<(), Failure> {
    let config = settings::config(cli)?;
    let store = settings::open_archive(cli, config.as_ref(), Mode::ReadOnly)?;
    let proof = tfaudit_integrity::prove(&*store, &args.event_id)?;
    let text = serde_json::to_string_pretty(&proof).map_err(|e| Failure::Internal(e.to_string()))? + "\n";
    match &args.output {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| Failure::Output(format!("cannot write {}: {e}", path.display())))
        }
        None => {
            let mut out = crate::output::Stdout::new();
            out.write_all(text.as_bytes())?;
            Ok(())
        }
    }
}

pub fn verify_proof(cli: &Cli, args: &VerifyProofArgs) -> Result<(), Failure> {
    let key = args.key.as_deref().map(public_key).transpose()?;
    let text = std::fs::read_to_string(&args.proof)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", args.proof.display())))?;
    let is_export = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("format").and_then(|f| f.as_str().map(str::to_owned)))
        .is_some_and(|f| f.starts_with("tfaudit-export-proof"));
    let check = if is_export {
        let export = match &args.export {
            Some(p) => p.clone(),
            None => {
                let name = args.proof.to_string_lossy();
                PathBuf::from(name.strip_suffix(".proof.json").ok_or_else(|| {
                    Failure::Usage(
                        "give the exported file with --export (the proof's name does not end in .proof.json)".into(),
                    )
                })?)
            }
        };
        let bytes =
            std::fs::read(&export).map_err(|e| Failure::Usage(format!("cannot read {}: {e}", export.display())))?;
        tfaudit_integrity::check_export_proof(&text, &bytes, key.as_ref())?
    } else {
        tfaudit_integrity::check_proof(&text, key.as_ref())?
    };
    if !cli.quiet {
        let mut out = crate::output::Stdout::new();
        writeln!(
            out,
            "proof holds: {} event(s) in archive {} at tree size {}",
            check.events,
            terminal_safe(&check.origin),
            check.tree_size
        )?;
        match check.signed_by {
            Some(k) => writeln!(out, "checkpoint signed by {k}")?,
            None => {
                writeln!(out, "the checkpoint's signature was not checked: give --key with the archive's public key")?
            }
        }
    }
    Ok(())
}
