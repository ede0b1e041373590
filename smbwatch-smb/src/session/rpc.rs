//! DCE/RPC over a named pipe: the BINDs that name a pipe's contexts and
//! the REQUESTs that call through them.

use super::{Out, Session, MAX_PDUS_PER_TRANSFER, MAX_PIPE_CONTEXTS};
use crate::{
    dcerpc::{self, Pdu, PduType},
    observation::{Direction, Limit, Observation, Unbound, Unseen},
    smb2::FileId,
};

impl Session {
    /// DCE/RPC PDUs in a pipe transfer: `data` is what was seen of `len`
    /// declared bytes.
    pub(super) fn rpc(
        &mut self,
        fid: FileId,
        data: &[u8],
        len: u32,
        dir: Direction,
        out: &mut Out<'_>,
    ) {
        let Some(file) = self.files.get_mut(&fid) else {
            // A handle whose CREATE answer was not seen (opened before the
            // sample, or inside this compound): its RPC is not followed.
            out.push(Observation::Unseen {
                what: Unseen::NoPipe {
                    bytes: u64::from(len),
                },
            });
            return;
        };
        out.pipe = Some(file.name.clone());
        let skip = match dir {
            Direction::ToServer => &mut file.skip_to_server,
            Direction::ToClient => &mut file.skip_to_client,
        };
        // The rest of a PDU begun in an earlier transfer.
        let mut at = (*skip).min(len) as usize;
        *skip -= at as u32;
        let mut errors = Vec::new();
        let mut limits = Vec::new();
        for n in 0..=MAX_PDUS_PER_TRANSFER {
            if at >= len as usize {
                break;
            }
            if n == MAX_PDUS_PER_TRANSFER {
                limits.push(Limit::RpcItems);
                break;
            }
            let Some(rest) = data.get(at..).filter(|r| !r.is_empty()) else {
                out.push(Observation::Unseen {
                    what: Unseen::RpcCut {
                        bytes: u64::from(len) - at as u64,
                    },
                });
                break;
            };
            let frag_len = match dcerpc::header(rest) {
                Ok((_, _, l)) => usize::from(l),
                Err(e) => {
                    errors.push(e);
                    break;
                }
            };
            match dcerpc::parse(rest) {
                Ok(Pdu::Bind { items, more }) => {
                    if more {
                        limits.push(Limit::RpcItems);
                    }
                    file.last_bind.clear();
                    for (id, iface) in items {
                        file.last_bind.push(id);
                        file.contexts.retain(|(c, _)| *c != id);
                        file.lost.retain(|(c, _)| *c != id);
                        if file.contexts.len() >= MAX_PIPE_CONTEXTS {
                            limits.push(Limit::PipeContexts);
                            lose(&mut file.lost, id, Unbound::Capped);
                        } else {
                            file.contexts.push((id, iface));
                        }
                        out.push(Observation::RpcBind { interface: iface });
                    }
                }
                Ok(Pdu::BindAck(accepted)) => {
                    for (id, ok) in file.last_bind.iter().zip(accepted) {
                        if !ok {
                            file.contexts.retain(|(c, _)| c != id);
                            lose(&mut file.lost, *id, Unbound::Refused);
                        }
                    }
                }
                Ok(Pdu::Other(PduType::BindNak)) => {
                    for id in &file.last_bind {
                        file.contexts.retain(|(c, _)| c != id);
                        lose(&mut file.lost, *id, Unbound::Refused);
                    }
                }
                Ok(Pdu::Request {
                    context,
                    opnum,
                    first: true,
                }) => {
                    let interface = file
                        .contexts
                        .iter()
                        .find(|(c, _)| *c == context)
                        .map(|(_, i)| *i);
                    // Said, not guessed from the pipe's name: a pipe can
                    // carry several interfaces.
                    let unbound = interface.is_none().then(|| {
                        file.lost
                            .iter()
                            .find(|(c, _)| *c == context)
                            .map_or(Unbound::NotSeen, |(_, why)| *why)
                    });
                    out.push(Observation::RpcCall {
                        interface,
                        unbound,
                        opnum,
                        operation: interface.and_then(|i| i.operation(opnum)),
                    });
                }
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
            let end = at + frag_len;
            if end > len as usize {
                let skip = match dir {
                    Direction::ToServer => &mut file.skip_to_server,
                    Direction::ToClient => &mut file.skip_to_client,
                };
                *skip = (end - len as usize) as u32;
            }
            at = end;
        }
        for e in errors {
            self.malformed(e, out);
        }
        for l in limits {
            self.limit(l, out);
        }
        out.pipe = None;
    }
}

/// Remembers why context `id` is unusable, within the pipe's cap.
fn lose(lost: &mut Vec<(u16, Unbound)>, id: u16, why: Unbound) {
    lost.retain(|(c, _)| *c != id);
    if lost.len() < MAX_PIPE_CONTEXTS {
        lost.push((id, why));
    }
}
