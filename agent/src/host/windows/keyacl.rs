//! Who may read a certificate's private key (reference §7: the worker service account needs it;
//! what `winhttpcertcfg -g` does). Reads and writes the DACL of the key container through
//! CryptoAPI (PP_KEYSET_SEC_DESCR) or CNG (NCRYPT_SECURITY_DESCR_PROPERTY), whichever holds the key.
//! Wine does not implement key security descriptors: verified only on real Windows.

use ssis_crds::CertStore;
use windows::Win32::Foundation::{
    ERROR_NONE_MAPPED, ERROR_SUCCESS, GENERIC_ALL, GENERIC_READ, HLOCAL, LocalFree, WIN32_ERROR,
};
use windows::Win32::Security::Authorization::{
    EXPLICIT_ACCESS_W, GRANT_ACCESS, NO_MULTIPLE_TRUSTEE, SetEntriesInAclW, TRUSTEE_IS_SID, TRUSTEE_IS_UNKNOWN,
    TRUSTEE_W,
};
use windows::Win32::Security::Cryptography::{
    CERT_KEY_SPEC, CERT_NCRYPT_KEY_SPEC, CRYPT_ACQUIRE_ALLOW_NCRYPT_KEY_FLAG, CRYPT_ACQUIRE_SILENT_FLAG,
    CryptAcquireCertificatePrivateKey, CryptGetProvParam, CryptReleaseContext, CryptSetProvParam,
    HCRYPTPROV_OR_NCRYPT_KEY_HANDLE, NCRYPT_FLAGS, NCRYPT_HANDLE, NCRYPT_SECURITY_DESCR_PROPERTY, NCryptFreeObject,
    NCryptGetProperty, NCryptSetProperty, PP_KEYSET_SEC_DESCR,
};
use windows::Win32::Security::{
    ACCESS_ALLOWED_ACE, ACE_HEADER, ACL, DACL_SECURITY_INFORMATION, GetAce, GetSecurityDescriptorDacl,
    InitializeSecurityDescriptor, LookupAccountNameW, LookupAccountSidW, MakeSelfRelativeSD, NO_INHERITANCE,
    PSECURITY_DESCRIPTOR, PSID, SECURITY_DESCRIPTOR, SID_NAME_USE, SetSecurityDescriptorDacl,
};
use windows::core::{BOOL, PCWSTR, PWSTR};

use super::certs::{Ctx, Store, find, open, store_name};
use super::util::{code_of, from_wide, map_code, map_win32, wide};
use crate::host::HostError;

const ACCESS_ALLOWED_ACE_TYPE: u8 = 0;
const SECURITY_DESCRIPTOR_REVISION: u32 = 1;
/// Rights that let an account use the key for TLS: generic read/all, or read-data once mapped.
const READ_MASK: u32 = GENERIC_READ.0 | GENERIC_ALL.0 | 0x1;

enum KeyHandle {
    Capi(usize),
    Cng(usize),
}

/// A certificate's private-key handle. Released on drop when CryptAcquireCertificatePrivateKey
/// says the caller owns it; otherwise it belongs to the certificate context, which `_ctx` (and
/// the store `_store` it came from) keep alive for as long as the handle is used. Fields drop
/// after `Drop::drop`, so the handle is released before the context.
struct Key {
    handle: KeyHandle,
    owned: bool,
    _ctx: Ctx,
    _store: Store,
}

impl Drop for Key {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // SAFETY: `owned` means the handle was handed to us to free; it is released once, with
        // the function of its kind (CryptoAPI provider vs CNG key), and not used afterwards.
        unsafe {
            let _ = match self.handle {
                KeyHandle::Capi(h) => CryptReleaseContext(h, 0),
                KeyHandle::Cng(h) => NCryptFreeObject(NCRYPT_HANDLE(h)),
            };
        }
    }
}

fn acquire(store: CertStore, thumbprint: &str) -> Result<Key, HostError> {
    let s = open(store)?;
    let ctx = find(&s, thumbprint)?.ok_or_else(|| {
        HostError::NotFound(format!("certificate {thumbprint} in LocalMachine\\{}", store_name(store)))
    })?;
    let mut handle = HCRYPTPROV_OR_NCRYPT_KEY_HANDLE::default();
    let mut spec = CERT_KEY_SPEC::default();
    let mut owned = BOOL::default();
    // SAFETY: `ctx` holds a live certificate context (and `s` its store) for the call; the
    // reserved parameter is null; `handle`, `spec` and `owned` are valid out slots.
    unsafe {
        CryptAcquireCertificatePrivateKey(
            ctx.as_ptr(),
            CRYPT_ACQUIRE_ALLOW_NCRYPT_KEY_FLAG | CRYPT_ACQUIRE_SILENT_FLAG,
            None,
            &mut handle,
            Some(&mut spec),
            Some(&mut owned),
        )
    }
    .map_err(|e| map_code(&format!("open private key of {thumbprint}"), code_of(&e)))?;
    let handle = if spec == CERT_NCRYPT_KEY_SPEC { KeyHandle::Cng(handle.0) } else { KeyHandle::Capi(handle.0) };
    Ok(Key { handle, owned: owned.as_bool(), _ctx: ctx, _store: s })
}

/// The key container's security descriptor (self-relative, DACL only).
fn read_descriptor(key: &Key, thumbprint: &str) -> Result<Vec<u64>, HostError> {
    let context = format!("read private key ACL of {thumbprint}");
    let mut len = 0u32;
    match key.handle {
        KeyHandle::Cng(h) => {
            // SAFETY: `key` keeps the CNG key handle open for the call; the property name is a
            // static NUL-terminated constant; a null output asks only for the size, into `len`.
            unsafe {
                NCryptGetProperty(
                    NCRYPT_HANDLE(h),
                    NCRYPT_SECURITY_DESCR_PROPERTY,
                    None,
                    &mut len,
                    DACL_SECURITY_INFORMATION,
                )
            }
            .map_err(|e| map_code(&context, code_of(&e)))?;
            let mut buf = vec![0u64; (len as usize).div_ceil(8)];
            // SAFETY: the same allocation viewed as bytes: `buf.len() * 8` bytes, initialised, u8
            // needs no alignment, and `buf` is not touched while `bytes` is in use.
            let bytes = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), buf.len() * 8) };
            // SAFETY: as above; the binding passes `bytes` with its length (at least `len`), so
            // the descriptor is written within it.
            unsafe {
                NCryptGetProperty(
                    NCRYPT_HANDLE(h),
                    NCRYPT_SECURITY_DESCR_PROPERTY,
                    Some(bytes),
                    &mut len,
                    DACL_SECURITY_INFORMATION,
                )
            }
            .map_err(|e| map_code(&context, code_of(&e)))?;
            Ok(buf)
        }
        KeyHandle::Capi(h) => {
            // SAFETY: `key` keeps the CryptoAPI provider handle open; a null output asks only
            // for the size, into `len`.
            unsafe { CryptGetProvParam(h, PP_KEYSET_SEC_DESCR.0, None, &mut len, DACL_SECURITY_INFORMATION.0) }
                .map_err(|e| map_code(&context, code_of(&e)))?;
            let mut buf = vec![0u64; (len as usize).div_ceil(8)];
            // SAFETY: `buf` holds at least `len` bytes (rounded up to whole u64s) and `len` tells
            // the API that size, so it writes within `buf` or fails.
            unsafe {
                CryptGetProvParam(
                    h,
                    PP_KEYSET_SEC_DESCR.0,
                    Some(buf.as_mut_ptr().cast()),
                    &mut len,
                    DACL_SECURITY_INFORMATION.0,
                )
            }
            .map_err(|e| map_code(&context, code_of(&e)))?;
            Ok(buf)
        }
    }
}

/// The DACL inside the self-relative descriptor `sd` (null when none is present). The pointer
/// points into `sd`: use it only while `sd` is alive and unchanged.
fn dacl_of(sd: &mut [u64], thumbprint: &str) -> Result<*mut ACL, HostError> {
    let mut present = BOOL::default();
    let mut defaulted = BOOL::default();
    let mut dacl: *mut ACL = std::ptr::null_mut();
    // SAFETY: `sd` holds a self-relative security descriptor written by the key API (8-byte
    // aligned); the out slots are valid; `dacl` receives a pointer into `sd` or null.
    unsafe {
        GetSecurityDescriptorDacl(PSECURITY_DESCRIPTOR(sd.as_mut_ptr().cast()), &mut present, &mut dacl, &mut defaulted)
    }
    .map_err(|e| map_code(&format!("parse private key ACL of {thumbprint}"), code_of(&e)))?;
    Ok(if present.as_bool() { dacl } else { std::ptr::null_mut() })
}

/// `DOMAIN\name` of a SID (just `name` for well-known SIDs without a domain).
///
/// # Safety
/// `sid` must point to a valid SID that stays alive for the call.
unsafe fn account_of(sid: PSID) -> Option<String> {
    let mut name = [0u16; 256];
    let mut domain = [0u16; 256];
    let (mut n, mut d) = (name.len() as u32, domain.len() as u32);
    let mut use_ = SID_NAME_USE::default();
    // SAFETY: `sid` is valid (the caller's contract); `name` and `domain` are live buffers whose
    // capacities in characters are `n` and `d`, so longer names fail instead of overflowing; the
    // remaining out slots are valid.
    unsafe {
        LookupAccountSidW(
            PCWSTR::null(),
            sid,
            Some(PWSTR(name.as_mut_ptr())),
            &mut n,
            Some(PWSTR(domain.as_mut_ptr())),
            &mut d,
            &mut use_,
        )
    }
    .ok()?;
    let (name, domain) = (from_wide(&name), from_wide(&domain));
    Some(if domain.is_empty() { name } else { format!("{domain}\\{name}") })
}

pub fn readers(store: CertStore, thumbprint: &str) -> Result<Vec<String>, HostError> {
    let key = acquire(store, thumbprint)?;
    let mut sd = read_descriptor(&key, thumbprint)?;
    let dacl = dacl_of(&mut sd, thumbprint)?;
    if dacl.is_null() {
        // A NULL DACL grants everyone everything.
        return Ok(vec!["Everyone".to_string()]);
    }
    // SAFETY: a non-null `dacl` points to the ACL inside `sd`, which lives (unchanged) until the
    // end of this function, as do the ACEs read below.
    let count = unsafe { (*dacl).AceCount };
    let mut out = Vec::new();
    for i in 0..u32::from(count) {
        let mut ace: *mut core::ffi::c_void = std::ptr::null_mut();
        // SAFETY: `dacl` is valid (above) and `i` < AceCount; `ace` is a valid out slot that
        // receives a pointer to the i-th ACE inside the ACL.
        if unsafe { GetAce(dacl, i, &mut ace) }.is_err() {
            continue;
        }
        // SAFETY: every ACE starts with an ACE_HEADER; ACEs are DWORD-aligned inside the ACL.
        let header = unsafe { &*ace.cast::<ACE_HEADER>() };
        if header.AceType != ACCESS_ALLOWED_ACE_TYPE {
            continue;
        }
        // SAFETY: an ACE of type ACCESS_ALLOWED_ACE_TYPE has the ACCESS_ALLOWED_ACE layout
        // (header, mask, then the SID from SidStart on, within AceSize).
        let allowed = unsafe { &*ace.cast::<ACCESS_ALLOWED_ACE>() };
        if allowed.Mask & READ_MASK != 0 {
            let sid = PSID((&allowed.SidStart as *const u32).cast_mut().cast());
            // SAFETY: SidStart is the first DWORD of the SID stored inline in this ACE, alive
            // with `sd`.
            if let Some(name) = unsafe { account_of(sid) }
                && !out.contains(&name)
            {
                out.push(name);
            }
        }
    }
    Ok(out)
}

fn sid_of(account: &str) -> Result<Vec<u64>, HostError> {
    let a = wide(account);
    let mut sid_len = 0u32;
    let mut domain_len = 0u32;
    let mut use_ = SID_NAME_USE::default();
    // Sizing call: fails with ERROR_INSUFFICIENT_BUFFER by design.
    // SAFETY: `a` is a NUL-terminated buffer alive for the call; null buffers with their sizes
    // (0) in `sid_len` and `domain_len` ask only for the sizes; the out slots are valid.
    if let Err(e) = unsafe {
        LookupAccountNameW(PCWSTR::null(), PCWSTR(a.as_ptr()), None, &mut sid_len, None, &mut domain_len, &mut use_)
    } && code_of(&e) == ERROR_NONE_MAPPED.0
    {
        return Err(HostError::NotFound(format!("account {account}")));
    }
    let mut sid = vec![0u64; (sid_len as usize).div_ceil(8).max(1)];
    let mut domain = vec![0u16; domain_len.max(1) as usize];
    // SAFETY: `a` is alive; `sid` holds at least `sid_len` bytes and `domain` at least
    // `domain_len` characters, and those lengths are what the API is told, so it writes within
    // the buffers or fails; the out slots are valid.
    unsafe {
        LookupAccountNameW(
            PCWSTR::null(),
            PCWSTR(a.as_ptr()),
            Some(PSID(sid.as_mut_ptr().cast())),
            &mut sid_len,
            Some(PWSTR(domain.as_mut_ptr())),
            &mut domain_len,
            &mut use_,
        )
    }
    .map_err(|e| match WIN32_ERROR(code_of(&e)) {
        ERROR_NONE_MAPPED => HostError::NotFound(format!("account {account}")),
        code => map_code(&format!("look up account {account}"), code.0),
    })?;
    Ok(sid)
}

pub fn grant_read(store: CertStore, thumbprint: &str, account: &str) -> Result<(), HostError> {
    if readers(store, thumbprint)?.iter().any(|r| r.eq_ignore_ascii_case(account)) {
        return Ok(());
    }
    let mut sid = sid_of(account)?;
    let key = acquire(store, thumbprint)?;
    let mut sd = read_descriptor(&key, thumbprint)?;
    let old = dacl_of(&mut sd, thumbprint)?;
    let entry = EXPLICIT_ACCESS_W {
        grfAccessPermissions: GENERIC_READ.0,
        grfAccessMode: GRANT_ACCESS,
        grfInheritance: NO_INHERITANCE,
        Trustee: TRUSTEE_W {
            pMultipleTrustee: std::ptr::null_mut(),
            MultipleTrusteeOperation: NO_MULTIPLE_TRUSTEE,
            TrusteeForm: TRUSTEE_IS_SID,
            TrusteeType: TRUSTEE_IS_UNKNOWN,
            ptstrName: PWSTR(sid.as_mut_ptr().cast()),
        },
    };
    let mut new_acl: *mut ACL = std::ptr::null_mut();
    // SAFETY: `entry`'s trustee points to the SID in `sid`, alive for the call; `old` is null or
    // the DACL inside `sd`, alive and unchanged; `new_acl` receives a LocalAlloc'ed ACL.
    let rc = unsafe { SetEntriesInAclW(Some(&[entry]), (!old.is_null()).then_some(old.cast_const()), &mut new_acl) };
    if rc != ERROR_SUCCESS {
        return Err(map_win32(&format!("build private key ACL of {thumbprint}"), rc));
    }
    // SAFETY: `new_acl` is the valid ACL SetEntriesInAclW just built, freed only below.
    let result = unsafe { set_descriptor(&key, new_acl, thumbprint) };
    // SAFETY: allocated by SetEntriesInAclW (LocalAlloc), freed once and not used afterwards.
    unsafe {
        let _ = LocalFree(Some(HLOCAL(new_acl.cast())));
    }
    result
}

/// Replace the key's DACL with `dacl`.
///
/// # Safety
/// `dacl` must point to a valid ACL that stays alive and unchanged for the call.
unsafe fn set_descriptor(key: &Key, dacl: *mut ACL, thumbprint: &str) -> Result<(), HostError> {
    let context = format!("write private key ACL of {thumbprint}");
    let mut absolute = SECURITY_DESCRIPTOR::default();
    let psd = PSECURITY_DESCRIPTOR((&mut absolute as *mut SECURITY_DESCRIPTOR).cast());
    // SAFETY: `psd` points to `absolute`, a local SECURITY_DESCRIPTOR of the right size and
    // alignment that outlives every use of `psd` below.
    unsafe { InitializeSecurityDescriptor(psd, SECURITY_DESCRIPTOR_REVISION) }
        .map_err(|e| map_code(&context, code_of(&e)))?;
    // SAFETY: `psd` is initialised; the absolute descriptor stores the `dacl` pointer, valid for
    // this whole call by the caller's contract (it is copied by MakeSelfRelativeSD below).
    unsafe { SetSecurityDescriptorDacl(psd, true, Some(dacl.cast_const()), false) }
        .map_err(|e| map_code(&context, code_of(&e)))?;
    // Both key APIs take a self-relative descriptor.
    let mut len = 0u32;
    // SAFETY: sizing call: no output buffer, the size needed goes to `len`.
    let _ = unsafe { MakeSelfRelativeSD(psd, None, &mut len) };
    let mut relative = vec![0u64; (len as usize).div_ceil(8).max(1)];
    // SAFETY: `relative` holds at least `len` bytes, the size the API is told, so it writes
    // within it or fails; the result copies the DACL, so it no longer refers to `dacl`.
    unsafe { MakeSelfRelativeSD(psd, Some(PSECURITY_DESCRIPTOR(relative.as_mut_ptr().cast())), &mut len) }
        .map_err(|e| map_code(&context, code_of(&e)))?;
    // SAFETY: the first `len` bytes of `relative` (len <= its size) hold the descriptor just
    // written; u8 needs no alignment and `relative` is not modified while `bytes` lives.
    let bytes = unsafe { std::slice::from_raw_parts(relative.as_ptr().cast::<u8>(), len as usize) };
    match key.handle {
        // SAFETY: `key` keeps the CNG key handle open; the property name is a static constant;
        // the binding passes `bytes` with its length; the API copies the descriptor.
        KeyHandle::Cng(h) => unsafe {
            NCryptSetProperty(
                NCRYPT_HANDLE(h),
                NCRYPT_SECURITY_DESCR_PROPERTY,
                bytes,
                NCRYPT_FLAGS(DACL_SECURITY_INFORMATION.0),
            )
        },
        // SAFETY: `key` keeps the provider handle open; for PP_KEYSET_SEC_DESCR the data is a
        // self-relative descriptor whose size the API reads from the descriptor itself (`bytes`).
        KeyHandle::Capi(h) => unsafe {
            CryptSetProvParam(h, PP_KEYSET_SEC_DESCR, bytes.as_ptr(), DACL_SECURITY_INFORMATION.0)
        },
    }
    .map_err(|e| map_code(&context, code_of(&e)))
}
