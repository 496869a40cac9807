//! Signed notes (C2SP `signed-note`, the format of Go's `golang.org/x/mod/sumdb/note`)
//! with Ed25519 keys, and the key encodings that go with them, so that other tools of
//! the transparency-log world read what tfaudit signs.
//!
//! A note is UTF-8 text ending in a newline, a blank line, then signature lines
//! `— <key name> <base64(key id ‖ signature)>`. A key id is the first four bytes of
//! `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)`.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

/// The algorithm byte of Ed25519 keys in the note format.
const ED25519: u8 = 0x01;
const DASH: &str = "\u{2014} ";

/// A key or note that cannot be used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoteError(pub String);

fn err(s: impl Into<String>) -> NoteError {
    NoteError(s.into())
}

fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '+') {
        return Err(err(format!("the key name {name:?} is not usable: a name is non-empty, without spaces or '+'")));
    }
    Ok(())
}

/// A key that signs notes. `Debug` never shows it.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    id: u32,
    key: SigningKey,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteSigner({}+{:08x}, <private>)", self.name, self.id)
    }
}

impl NoteSigner {
    /// A new key from 32 random bytes.
    ///
    /// # Errors
    /// When the name is not usable.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        Self::from_seed(name, rand::random())
    }

    /// The key of this seed (Ed25519's 32-byte private key).
    ///
    /// # Errors
    /// When the name is not usable.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(Self { name: name.to_owned(), id, key })
    }

    /// Reads `PRIVATE+KEY+<name>+<id>+<base64(0x01 ‖ seed)>`.
    ///
    /// # Errors
    /// When the text is not such a key, or its id does not match.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let bad = || err("not a signing key: expected PRIVATE+KEY+<name>+<id>+<key>, as `tfaudit keygen` writes");
        let rest = text.trim().strip_prefix("PRIVATE+KEY+").ok_or_else(bad)?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let raw = B64.decode(key).map_err(|_| bad())?;
        let [ED25519, seed @ ..] = raw.as_slice() else { return Err(bad()) };
        let seed: [u8; 32] = seed.try_into().map_err(|_| bad())?;
        let signer = Self::from_seed(name, seed)?;
        if format!("{:08x}", signer.id) != id {
            return Err(err("the signing key's id does not match its key: the key is damaged"));
        }
        Ok(signer)
    }

    /// The encoding [`NoteSigner::parse`] reads. Handle with care: it is the private key.
    #[must_use]
    pub fn encode_private(&self) -> String {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!("PRIVATE+KEY+{}+{:08x}+{}", self.name, self.id, B64.encode(raw))
    }

    /// The key that checks this key's signatures.
    #[must_use]
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier { name: self.name.clone(), id: self.id, key: self.key.verifying_key() }
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Signs `text` (which must end in a newline) and returns the whole note.
    ///
    /// # Errors
    /// When the text is empty or does not end in a newline.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let sig = self.key.sign(text.as_bytes());
        let mut blob = self.id.to_be_bytes().to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        Ok(format!("{text}\n{DASH}{} {}\n", self.name, B64.encode(blob)))
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') || text.contains("\n\n") {
        return Err(err("a note's text ends in a newline and has no blank line"));
    }
    Ok(())
}

/// A key that checks notes' signatures: `<name>+<id>+<base64(0x01 ‖ public key)>`.
#[derive(Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl fmt::Debug for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl NoteVerifier {
    /// Reads a verifier key.
    ///
    /// # Errors
    /// When the text is not such a key, or its id does not match.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let bad = || err("not a public key: expected <name>+<id>+<key>, as `tfaudit keygen` writes in its .pub file");
        let text = text.trim();
        if text.starts_with("PRIVATE+KEY+") {
            return Err(err("this is the private signing key: give the public key (the .pub file) instead"));
        }
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        check_name(name)?;
        let raw = B64.decode(key).map_err(|_| bad())?;
        let [ED25519, public @ ..] = raw.as_slice() else { return Err(bad()) };
        let public: [u8; 32] = public.try_into().map_err(|_| bad())?;
        let key = VerifyingKey::from_bytes(&public).map_err(|_| bad())?;
        let want = key_id(name, &public);
        if format!("{want:08x}") != id {
            return Err(err("the public key's id does not match its key: the key is damaged"));
        }
        Ok(Self { name: name.to_owned(), id: want, key })
    }

    #[must_use]
    pub fn encode(&self) -> String {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, B64.encode(raw))
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    #[must_use]
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// A note split into its text and its signatures (not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub signatures: Vec<Signature>,
}

/// One signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub name: String,
    pub id: u32,
    pub bytes: Vec<u8>,
}

impl Note {
    /// Splits a note; a text with no signature block (an unsigned checkpoint) has none.
    ///
    /// # Errors
    /// When the note is malformed.
    pub fn parse(note: &str) -> Result<Self, NoteError> {
        let Some(split) = note.rfind("\n\n") else {
            check_text(note)?;
            return Ok(Self { text: note.to_owned(), signatures: Vec::new() });
        };
        let text = &note[..=split];
        check_text(text)?;
        let block = &note[split + 2..];
        if !block.ends_with('\n') {
            return Err(err("a note's signature block ends in a newline"));
        }
        let mut signatures = Vec::new();
        for line in block.lines() {
            let bad = || err(format!("not a signature line: {line:?}"));
            let rest = line.strip_prefix(DASH).ok_or_else(bad)?;
            let (name, blob) = rest.split_once(' ').ok_or_else(bad)?;
            let raw = B64.decode(blob).map_err(|_| bad())?;
            if raw.len() < 5 {
                return Err(bad());
            }
            let id = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
            signatures.push(Signature { name: name.to_owned(), id, bytes: raw[4..].to_vec() });
        }
        Ok(Self { text: text.to_owned(), signatures })
    }

    /// Whether `key` signed this text.
    #[must_use]
    pub fn signed_by(&self, key: &NoteVerifier) -> bool {
        self.signatures.iter().any(|s| {
            s.name == key.name
                && s.id == key.id
                && ed25519_dalek::Signature::from_slice(&s.bytes)
                    .is_ok_and(|sig| key.key.verify(self.text.as_bytes(), &sig).is_ok())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of Go's golang.org/x/mod/sumdb/note (its package documentation and
    // example_test.go): the same key must give the same signature byte for byte.
    const SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const TEXT: &str =
        "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const SIGNED: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn signs_as_go_does() {
        let signer = NoteSigner::parse(SKEY).unwrap();
        assert_eq!(signer.sign(TEXT).unwrap(), SIGNED);
        assert_eq!(signer.verifier().encode(), VKEY);
        assert_eq!(signer.encode_private(), SKEY);
        let note = Note::parse(SIGNED).unwrap();
        assert_eq!(note.text, TEXT);
        assert!(note.signed_by(&NoteVerifier::parse(VKEY).unwrap()));
        // Go's GenerateKey with a reader of zeros, named EnochRoot.
        let enoch = NoteSigner::from_seed("EnochRoot", [0; 32]).unwrap();
        assert_eq!(enoch.verifier().encode(), "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop");
    }

    #[test]
    fn an_edited_note_or_another_key_fails() {
        let vkey = NoteVerifier::parse(VKEY).unwrap();
        let edited = SIGNED.replacen("answer", "Answer", 1);
        assert!(!Note::parse(&edited).unwrap().signed_by(&vkey));
        let other = NoteSigner::from_seed("PeterNeumann", [7; 32]).unwrap();
        assert!(!Note::parse(SIGNED).unwrap().signed_by(&other.verifier()));
        let unsigned = Note::parse(TEXT).unwrap();
        assert!(unsigned.signatures.is_empty() && !unsigned.signed_by(&vkey));
    }

    #[test]
    fn bad_keys_say_why_and_never_show_the_private_key() {
        assert!(NoteSigner::parse("nonsense").is_err());
        assert!(NoteVerifier::parse(SKEY).unwrap_err().0.contains("private"));
        let damaged = VKEY.replace("c74f20a3", "c74f20a4");
        assert!(NoteVerifier::parse(&damaged).unwrap_err().0.contains("damaged"));
        let signer = NoteSigner::parse(SKEY).unwrap();
        assert!(!format!("{signer:?}").contains("AYEKFALVFGyN"));
        assert!(NoteSigner::generate("has space").is_err());
    }
}
