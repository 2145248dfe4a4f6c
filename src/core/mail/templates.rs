//! The subjects and bodies of every kind of mail: built in, each file
//! replaceable from `AUTHD_MAIL_TEMPLATE_DIR`. A kind's files are
//! `<kind>.subject`, `<kind>.txt` and `<kind>.html` (kinds:
//! password_reset, verify_email, change_email, email_changed,
//! signup_attempt); `{link}` stands for the mail's link.

use std::path::Path;

use anyhow::Context;

use crate::domain::mail::MailKind;

const LINK: &str = "{link}";

struct Template {
    subject: String,
    text: String,
    html: String,
}

/// A mail's rendered parts.
pub(super) struct Rendered {
    pub(super) subject: String,
    pub(super) text: String,
    pub(super) html: String,
}

/// One template per kind, in the order of [`MailKind::ALL`].
pub(super) struct Templates([Template; MailKind::ALL.len()]);

fn built_in(kind: MailKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        MailKind::PasswordReset => (
            "Reset your password",
            "Someone asked to reset the password of your account.\n\n\
             To choose a new password, open this link:\n\n{link}\n\n\
             If it was not you, ignore this mail: your password stays as it is.\n",
            "<p>Someone asked to reset the password of your account.</p>\
             <p><a href=\"{link}\">Choose a new password</a></p>\
             <p>If it was not you, ignore this mail: your password stays as it is.</p>",
        ),
        MailKind::VerifyEmail => (
            "Verify your email address",
            "To confirm that this address is yours, open this link:\n\n{link}\n\n\
             If you did not create an account, ignore this mail.\n",
            "<p>To confirm that this address is yours, open this link:</p>\
             <p><a href=\"{link}\">Verify my address</a></p>\
             <p>If you did not create an account, ignore this mail.</p>",
        ),
        MailKind::ChangeEmail => (
            "Confirm your new email address",
            "Someone asked to make this the email address of their account.\n\n\
             To confirm, open this link:\n\n{link}\n\n\
             If it was not you, ignore this mail.\n",
            "<p>Someone asked to make this the email address of their account.</p>\
             <p><a href=\"{link}\">Confirm the new address</a></p>\
             <p>If it was not you, ignore this mail.</p>",
        ),
        MailKind::EmailChanged => (
            "Your email address was changed",
            "The email address of your account was changed, and mail now goes to the \
             new address.\n\nIf you did not do this, contact support at once.\n",
            "<p>The email address of your account was changed, and mail now goes to the \
             new address.</p><p>If you did not do this, contact support at once.</p>",
        ),
        MailKind::SignupAttempt => (
            "Someone tried to sign up with your address",
            "Someone tried to create an account with this email address, which already \
             has one.\n\nIf it was you, log in instead, or reset your password. \
             Otherwise ignore this mail.\n",
            "<p>Someone tried to create an account with this email address, which already \
             has one.</p><p>If it was you, log in instead, or reset your password. \
             Otherwise ignore this mail.</p>",
        ),
    }
}

impl Templates {
    /// The built-in templates, with any file of `dir` in place of its
    /// part. A kind that carries a link must keep `{link}` in both bodies;
    /// a subject is one line.
    pub(super) fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(dir) = dir {
            anyhow::ensure!(
                dir.is_dir(),
                "AUTHD_MAIL_TEMPLATE_DIR {} is not a directory",
                dir.display()
            );
        }
        let mut templates = Vec::with_capacity(MailKind::ALL.len());
        for kind in MailKind::ALL {
            let (subject, text, html) = built_in(kind);
            let part = |extension: &str, default: &str| -> anyhow::Result<String> {
                let Some(dir) = dir else {
                    return Ok(default.to_owned());
                };
                let path = dir.join(format!("{}.{extension}", kind.as_str()));
                match std::fs::read_to_string(&path) {
                    Ok(text) => Ok(text),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                        Ok(default.to_owned())
                    }
                    Err(error) => Err(error)
                        .with_context(|| format!("cannot read mail template {}", path.display())),
                }
            };
            let template = Template {
                subject: part("subject", subject)?.trim().to_owned(),
                text: part("txt", text)?,
                html: part("html", html)?,
            };
            let name = kind.as_str();
            anyhow::ensure!(
                !template.subject.is_empty() && !template.subject.contains(['\r', '\n']),
                "mail template {name}.subject must be one non-empty line"
            );
            if kind.purpose().is_some() {
                anyhow::ensure!(
                    template.text.contains(LINK) && template.html.contains(LINK),
                    "mail templates {name}.txt and {name}.html must contain {LINK}"
                );
            }
            templates.push(template);
        }
        let templates = templates
            .try_into()
            .map_err(|_| anyhow::anyhow!("a mail template per kind"))?;
        Ok(Self(templates))
    }

    pub(super) fn render(&self, kind: MailKind, link: Option<&str>) -> Rendered {
        let template = &self.0[kind.index()];
        let link = link.unwrap_or_default();
        Rendered {
            subject: template.subject.clone(),
            text: template.text.replace(LINK, link),
            html: template.html.replace(LINK, &escape_html(link)),
        }
    }
}

fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_escaped_in_html_and_verbatim_in_text() {
        let templates = Templates::load(None).unwrap();
        let link = "https://app.example/reset?a=1&token=abc";
        let rendered = templates.render(MailKind::PasswordReset, Some(link));
        assert!(rendered.text.contains(link));
        assert!(rendered.html.contains("reset?a=1&amp;token=abc"));
        assert!(!rendered.subject.is_empty());
    }

    #[test]
    fn an_override_without_the_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("verify_email.txt"), "no link here").unwrap();
        let error = Templates::load(Some(dir.path())).err().unwrap();
        assert!(error.to_string().contains("verify_email.txt"), "{error}");
        std::fs::write(dir.path().join("verify_email.txt"), "open {link}").unwrap();
        let templates = Templates::load(Some(dir.path())).unwrap();
        let rendered = templates.render(MailKind::VerifyEmail, Some("L"));
        assert_eq!(rendered.text, "open L");
    }
}
