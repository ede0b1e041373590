//! SMB1: the dialects offered, the share connected, and MS17-010's signs
//! (see [`ExploitSign`]); SMB1 is otherwise only said to be in use.

use super::{Out, Session, MAX_TRANS2_PROBES};
use crate::{
    observation::{ExploitSign, Observation},
    smb1::{self, Smb1},
};

impl Session {
    /// One SMB1 message.
    pub(super) fn smb1(&mut self, b: &[u8], out: &mut Out<'_>) {
        self.counters.messages += 1;
        match smb1::parse(b) {
            Ok(Smb1::Negotiate(dialects)) => out.push(Observation::Smb1 { dialects }),
            Ok(Smb1::TreeConnect(path)) => out.push(Observation::TreeConnect {
                path,
                share_type: None,
                status: None,
            }),
            Ok(m) => self.smb1_exploit(&m, out),
            Err(e) => self.malformed(e, out),
        }
    }

    /// MS17-010's signs among the other SMB1 messages (see [`ExploitSign`]).
    fn smb1_exploit(&mut self, m: &Smb1, out: &mut Out<'_>) {
        let sign = match *m {
            Smb1::Trans2 {
                subcommand: smb1::TRANS2_SESSION_SETUP,
                mid,
            } => {
                if self.trans2_probes.len() == MAX_TRANS2_PROBES {
                    self.trans2_probes.remove(0);
                }
                self.trans2_probes.push(mid);
                ExploitSign::DoublePulsarCommand
            }
            Smb1::Trans2Reply { mid } => {
                let Some(i) = self
                    .trans2_probes
                    .iter()
                    .position(|&p| p == mid || p.wrapping_add(16) == mid)
                else {
                    return;
                };
                let probe = self.trans2_probes.remove(i);
                if probe == mid {
                    return; // answered by the server itself: no implant
                }
                ExploitSign::DoublePulsarAnswer
            }
            Smb1::NtTransact {
                function: 0,
                total_data,
            } if total_data > u32::from(u16::MAX) => ExploitSign::EternalBlue,
            _ => return,
        };
        out.push(Observation::Exploit { sign });
    }
}
