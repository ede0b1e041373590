//! SET_INFO: a rename (an executable dropped under a harmless name and
//! renamed afterwards); other information classes say nothing here.

use super::{Out, Session, ALL_FF};
use crate::{
    observation::Observation,
    smb2::{self, FileId, Header},
    wire::ParseError,
};

impl Session {
    /// A SET_INFO request: a rename is observed, and later messages on the
    /// handle name the file by its new name.
    pub(super) fn set_info(
        &mut self,
        h: &Header,
        m: &[u8],
        chain: &Option<(FileId, Option<(String, bool)>)>,
        out: &mut Out<'_>,
    ) -> Result<(), ParseError> {
        let Some((fid, to)) = smb2::set_info_rename(m)? else {
            return Ok(());
        };
        let name = self.file_name(h, fid, chain);
        if matches!(name, Some((_, true))) {
            // A pipe: nothing a rename means.
            return Ok(());
        }
        let fid = if h.related && fid == ALL_FF {
            chain.as_ref().map_or(fid, |(f, _)| *f)
        } else {
            fid
        };
        if let Some(f) = self.files.get_mut(&fid) {
            f.name.clone_from(&to);
        }
        out.push(Observation::Rename {
            name: name.map(|(n, _)| n),
            to,
        });
        Ok(())
    }
}
