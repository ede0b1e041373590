//! The SMB monitor's tests: hand-built sessions (`smbwatch_smb::build`)
//! and the shared captures, through `Pipeline::smb_sample`.
