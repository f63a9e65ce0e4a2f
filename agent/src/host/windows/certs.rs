//! LocalMachine\Root and LocalMachine\My certificate stores (crypt32).

use ssis_crds::CertStore;
use windows::Win32::Foundation::{ERROR_INVALID_PASSWORD, HLOCAL, LocalFree};
use windows::Win32::Security::Cryptography::{
    CERT_ALT_NAME_INFO, CERT_CONTEXT, CERT_FIND_SHA1_HASH, CERT_HASH_PROP_ID, CERT_INFO, CERT_KEY_PROV_INFO_PROP_ID,
    CERT_NAME_STR_REVERSE_FLAG, CERT_OPEN_STORE_FLAGS, CERT_QUERY_ENCODING_TYPE, CERT_STORE_ADD_REPLACE_EXISTING,
    CERT_STORE_ADD_USE_EXISTING, CERT_STORE_CTRL_COMMIT, CERT_STORE_PROV_SYSTEM_W, CERT_STRING_TYPE,
    CERT_SYSTEM_STORE_LOCAL_MACHINE, CERT_X500_NAME_STR, CRYPT_DECODE_ALLOC_FLAG, CRYPT_INTEGER_BLOB,
    CRYPT_MACHINE_KEYSET, CertAddCertificateContextToStore, CertAddEncodedCertificateToStore, CertCloseStore,
    CertControlStore, CertDeleteCertificateFromStore, CertEnumCertificatesInStore, CertFindCertificateInStore,
    CertFindExtension, CertFreeCertificateContext, CertGetCertificateContextProperty, CertNameToStrW,
    CryptDecodeObjectEx, HCERTSTORE, PFXImportCertStore, PKCS_7_ASN_ENCODING, X509_ALTERNATE_NAME, X509_ASN_ENCODING,
    szOID_SUBJECT_ALT_NAME2,
};
use windows::Win32::Security::Cryptography::{CERT_CONTROL_STORE_FLAGS, CertOpenStore};
use windows::core::PCWSTR;

use super::util::{
    code_of, filetime_to_rfc3339, from_wide, hex_upper, map_code, parse_thumbprint, pwstr_to_string, wide,
};
use crate::host::{CertInfo, HostError, SecretString};

const ENCODING: CERT_QUERY_ENCODING_TYPE = CERT_QUERY_ENCODING_TYPE(X509_ASN_ENCODING.0 | PKCS_7_ASN_ENCODING.0);
/// `CERT_ALT_NAME_DNS_NAME` (wincrypt.h); the crate puts it behind another feature.
const CERT_ALT_NAME_DNS_NAME: u32 = 3;

/// Closes the store on drop. Holds a store handle (CertOpenStore / PFXImportCertStore) owned by
/// this guard alone.
pub(crate) struct Store(HCERTSTORE);

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: an open store owned by this guard, closed exactly once. Flags 0: contexts still
        // held elsewhere keep their own reference to the store, as crypt32 documents.
        unsafe {
            let _ = CertCloseStore(Some(self.0), 0);
        }
    }
}

/// Frees a certificate context on drop. Holds a non-null context whose reference this guard
/// owns (from find, enumeration or add), so the context stays valid while the guard lives.
pub(crate) struct Ctx(*const CERT_CONTEXT);

impl Ctx {
    /// `None` for a null pointer (nothing found, nothing returned).
    fn new(ctx: *const CERT_CONTEXT) -> Option<Self> {
        (!ctx.is_null()).then_some(Self(ctx))
    }

    /// For Win32 calls; valid while `self` lives.
    pub(crate) fn as_ptr(&self) -> *const CERT_CONTEXT {
        self.0
    }

    pub(crate) fn get(&self) -> &CERT_CONTEXT {
        // SAFETY: non-null by construction, and the reference this guard owns keeps the context
        // alive for as long as the returned borrow of `self`.
        unsafe { &*self.0 }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: releases the one reference this guard owns, exactly once.
        unsafe {
            let _ = CertFreeCertificateContext(Some(self.0));
        }
    }
}

pub(crate) fn store_name(store: CertStore) -> &'static str {
    match store {
        CertStore::Root => "Root",
        CertStore::My => "My",
    }
}

pub(crate) fn open(store: CertStore) -> Result<Store, HostError> {
    let name = wide(store_name(store));
    // SAFETY: for CERT_STORE_PROV_SYSTEM_W the parameter is a NUL-terminated UTF-16 store name;
    // `name` is alive for the call (the provider copies it). The handle is owned by `Store`.
    let h = unsafe {
        CertOpenStore(
            CERT_STORE_PROV_SYSTEM_W,
            CERT_QUERY_ENCODING_TYPE(0),
            None,
            CERT_OPEN_STORE_FLAGS(CERT_SYSTEM_STORE_LOCAL_MACHINE),
            Some(name.as_ptr().cast()),
        )
    }
    .map_err(|e| map_code(&format!("open LocalMachine\\{}", store_name(store)), code_of(&e)))?;
    Ok(Store(h))
}

/// Next certificate of `store` after `prev` (null: the first), or `None` at the end. The call
/// releases `prev`'s reference, so `prev` must be the previous result and is not used again.
fn next_in(store: &Store, prev: *const CERT_CONTEXT) -> *const CERT_CONTEXT {
    // SAFETY: `store` is open; `prev` is null or the context the previous call returned, whose
    // reference this call takes over and frees (callers drop their pointer to it).
    unsafe { CertEnumCertificatesInStore(store.0, (!prev.is_null()).then_some(prev)) }
}

fn thumbprint(ctx: &CERT_CONTEXT) -> Result<String, HostError> {
    let mut hash = [0u8; 20];
    let mut len = hash.len() as u32;
    // SAFETY: `ctx` is a live context (a reference); the output buffer is `hash` with its exact
    // size in `len`, so at most 20 bytes are written (a SHA-1), else an error is returned.
    unsafe { CertGetCertificateContextProperty(ctx, CERT_HASH_PROP_ID, Some(hash.as_mut_ptr().cast()), &mut len) }
        .map_err(|e| map_code("read certificate hash", code_of(&e)))?;
    Ok(hex_upper(&hash[..len as usize]))
}

fn has_private_key(ctx: &CERT_CONTEXT) -> bool {
    let mut len = 0u32;
    // SAFETY: `ctx` is a live context; a null buffer asks only for the size, written to `len`.
    unsafe { CertGetCertificateContextProperty(ctx, CERT_KEY_PROV_INFO_PROP_ID, None, &mut len) }.is_ok()
}

/// The decoded certificate fields of `ctx`.
fn info_of(ctx: &CERT_CONTEXT) -> &CERT_INFO {
    // SAFETY: crypt32 sets pCertInfo for every certificate context it creates; it points into
    // the context's own memory and lives as long as the context.
    unsafe { &*ctx.pCertInfo }
}

fn subject(ctx: &CERT_CONTEXT) -> String {
    let info = info_of(ctx);
    // Reverse order prints `CN=..., O=...` like certmgr and PowerShell.
    let ty = CERT_STRING_TYPE(CERT_X500_NAME_STR.0 | CERT_NAME_STR_REVERSE_FLAG);
    // SAFETY: `info.Subject` is a name blob inside the live context; without a buffer the call
    // only returns the size needed, NUL included.
    let n = unsafe { CertNameToStrW(ctx.dwCertEncodingType, &info.Subject, ty, None) };
    let mut buf = vec![0u16; n.max(1) as usize];
    // SAFETY: as above; the binding passes `buf` with its length, so the API writes within it.
    unsafe { CertNameToStrW(ctx.dwCertEncodingType, &info.Subject, ty, Some(&mut buf)) };
    from_wide(&buf)
}

fn dns_names(ctx: &CERT_CONTEXT) -> Vec<String> {
    let info = info_of(ctx);
    if info.cExtension == 0 || info.rgExtension.is_null() {
        return Vec::new();
    }
    // SAFETY: a non-null rgExtension points to cExtension extensions inside the live context.
    let extensions = unsafe { std::slice::from_raw_parts(info.rgExtension, info.cExtension as usize) };
    // SAFETY: the OID is a static NUL-terminated constant and `extensions` a valid slice; the
    // result is null or points into that slice.
    let ext = unsafe { CertFindExtension(szOID_SUBJECT_ALT_NAME2, extensions) };
    // SAFETY: a non-null result points to one element of `extensions`, alive with `ctx`.
    let Some(ext) = (unsafe { ext.as_ref() }) else {
        return Vec::new();
    };
    if ext.Value.pbData.is_null() {
        return Vec::new();
    }
    // SAFETY: the extension's DER value: cbData bytes at a non-null pbData inside the context.
    let encoded = unsafe { std::slice::from_raw_parts(ext.Value.pbData, ext.Value.cbData as usize) };
    let mut decoded: *mut CERT_ALT_NAME_INFO = std::ptr::null_mut();
    let mut size = 0u32;
    // SAFETY: `encoded` is a valid slice; X509_ALTERNATE_NAME is one of the predefined
    // struct-type constants the API accepts in place of an OID string; with
    // CRYPT_DECODE_ALLOC_FLAG the output parameter is the address of `decoded`, which receives a
    // LocalAlloc'ed CERT_ALT_NAME_INFO (freed below); `size` is a valid out slot.
    let ok = unsafe {
        CryptDecodeObjectEx(
            X509_ASN_ENCODING,
            X509_ALTERNATE_NAME,
            encoded,
            CRYPT_DECODE_ALLOC_FLAG,
            None,
            Some((&mut decoded as *mut *mut CERT_ALT_NAME_INFO).cast()),
            &mut size,
        )
    };
    if ok.is_err() || decoded.is_null() {
        return Vec::new();
    }
    // SAFETY: `decoded` is the non-null CERT_ALT_NAME_INFO just allocated and filled; its entry
    // array (cAltEntry entries, null only when empty) lives in the same allocation.
    let entries = unsafe {
        let names = &*decoded;
        if names.rgAltEntry.is_null() {
            &[]
        } else {
            std::slice::from_raw_parts(names.rgAltEntry, names.cAltEntry as usize)
        }
    };
    let dns = entries
        .iter()
        .filter(|e| e.dwAltNameChoice == CERT_ALT_NAME_DNS_NAME)
        // SAFETY: for a DNS entry the active union member is pwszDNSName, a NUL-terminated
        // string inside the same allocation, alive until the LocalFree below.
        .map(|e| unsafe { pwstr_to_string(e.Anonymous.pwszDNSName) })
        .collect();
    // SAFETY: `decoded` came from CryptDecodeObjectEx with CRYPT_DECODE_ALLOC_FLAG (LocalAlloc),
    // is freed once, and neither it nor `entries` is used afterwards.
    unsafe {
        let _ = LocalFree(Some(HLOCAL(decoded.cast())));
    }
    dns
}

fn cert_info(ctx: &CERT_CONTEXT) -> Result<CertInfo, HostError> {
    let info = info_of(ctx);
    let not_after = (u64::from(info.NotAfter.dwHighDateTime) << 32) | u64::from(info.NotAfter.dwLowDateTime);
    Ok(CertInfo {
        thumbprint: thumbprint(ctx)?,
        subject: subject(ctx),
        dns_names: dns_names(ctx),
        not_after: filetime_to_rfc3339(not_after),
        has_private_key: has_private_key(ctx),
    })
}

pub fn list(store: CertStore) -> Result<Vec<CertInfo>, HostError> {
    let s = open(store)?;
    let mut out = Vec::new();
    let mut prev: *const CERT_CONTEXT = std::ptr::null();
    loop {
        // Enumeration frees the previous context itself.
        let ctx = next_in(&s, prev);
        // SAFETY: a non-null result is a live context until it is handed back to `next_in`.
        let Some(current) = (unsafe { ctx.as_ref() }) else {
            return Ok(out);
        };
        match cert_info(current) {
            Ok(info) => out.push(info),
            Err(e) => {
                // The enumeration stops here: release the current context ourselves.
                drop(Ctx::new(ctx));
                return Err(e);
            }
        }
        prev = ctx;
    }
}

/// Find a certificate by SHA-1 hash; the caller owns the returned context.
pub(crate) fn find(store: &Store, thumbprint: &str) -> Result<Option<Ctx>, HostError> {
    let mut hash = parse_thumbprint(thumbprint)?;
    let blob = CRYPT_INTEGER_BLOB { cbData: hash.len() as u32, pbData: hash.as_mut_ptr() };
    // SAFETY: `store` is open; for CERT_FIND_SHA1_HASH the parameter is a CRYPT_INTEGER_BLOB:
    // `blob`, pointing at `hash`, both alive for the call; no previous context. A returned
    // context carries a reference the caller owns (wrapped in `Ctx`).
    let ctx = unsafe {
        CertFindCertificateInStore(
            store.0,
            ENCODING,
            0,
            CERT_FIND_SHA1_HASH,
            Some((&blob as *const CRYPT_INTEGER_BLOB).cast()),
            None,
        )
    };
    Ok(Ctx::new(ctx))
}

/// A crypt32 parse failure (CRYPT_E_ASN1_*, NTE_BAD_DATA, ...) means bad material, not an OS fault.
/// Code 0: Wine fails a wrong password or an unsupported key without setting an error code.
fn material_error(context: &str, code: u32) -> HostError {
    if code == 0 || code == ERROR_INVALID_PASSWORD.0 || code & 0xFFFF_0000 == 0x8009_0000 {
        HostError::Invalid(format!("{context}: os error {code:#x}"))
    } else {
        map_code(context, code)
    }
}

pub fn import_pfx(store: CertStore, pfx: &[u8], password: &SecretString) -> Result<String, HostError> {
    let target = open(store)?;
    // PFXImportCertStore only reads the blob; the cast to *mut is what the struct's type asks for.
    let blob = CRYPT_INTEGER_BLOB { cbData: pfx.len() as u32, pbData: pfx.as_ptr().cast_mut() };
    let mut pw = wide(password.expose());
    // Machine key set so services can use the key. No PKCS12_ALLOW_OVERWRITE_KEY: Windows would
    // silently replace an existing key container, and Wine rejects the flag (error 120).
    // SAFETY: `blob` describes `pfx` (cbData bytes at pbData) and `pw` is a NUL-terminated buffer;
    // both outlive the call, which copies what it keeps. The store is owned by `Store` below.
    let imported = unsafe { PFXImportCertStore(&blob, PCWSTR(pw.as_ptr()), CRYPT_MACHINE_KEYSET) };
    // SAFETY: each `c` is a `&mut u16` into the live `pw`: valid and aligned for one write.
    // Volatile so zeroing the password before it is freed is not optimised away.
    pw.iter_mut().for_each(|c| unsafe { std::ptr::write_volatile(c, 0) });
    let temp = Store(imported.map_err(|e| material_error("import PFX", code_of(&e)))?);

    // The end-entity certificate is the one that carries the private key.
    let mut prev: *const CERT_CONTEXT = std::ptr::null();
    loop {
        let Some(ctx) = Ctx::new(next_in(&temp, prev)) else {
            return Err(HostError::Invalid("PFX holds no certificate with a private key".into()));
        };
        if has_private_key(ctx.get()) {
            let thumbprint = thumbprint(ctx.get())?;
            // SAFETY: `target` is open and `ctx` a live context; no output context is requested,
            // so there is nothing more to free.
            unsafe { CertAddCertificateContextToStore(Some(target.0), ctx.0, CERT_STORE_ADD_REPLACE_EXISTING, None) }
                .map_err(|e| map_code(&format!("add {thumbprint} to LocalMachine\\{}", store_name(store)), code_of(&e)))?;
            return Ok(thumbprint);
        }
        // Hand the reference back to the enumeration, which frees it on the next call.
        prev = ctx.0;
        std::mem::forget(ctx);
    }
}

pub fn import_certificate(store: CertStore, der: &[u8]) -> Result<String, HostError> {
    let target = open(store)?;
    let mut added: *mut CERT_CONTEXT = std::ptr::null_mut();
    // Use-existing keeps a present copy (and its private-key link) untouched: idempotent.
    // SAFETY: `target` is open; the binding passes `der` with its length; `added` is a valid out
    // slot that receives a context whose reference we own (freed by `Ctx`).
    unsafe {
        CertAddEncodedCertificateToStore(
            Some(target.0),
            X509_ASN_ENCODING,
            der,
            CERT_STORE_ADD_USE_EXISTING,
            Some(&mut added),
        )
    }
    .map_err(|e| material_error(&format!("add certificate to LocalMachine\\{}", store_name(store)), code_of(&e)))?;
    let ctx = Ctx::new(added).ok_or_else(|| HostError::Invalid("the store returned no certificate".into()))?;
    thumbprint(ctx.get())
}

pub fn remove(store: CertStore, thumbprint: &str) -> Result<bool, HostError> {
    let s = open(store)?;
    let mut removed = false;
    while let Some(ctx) = find(&s, thumbprint)? {
        // CertDeleteCertificateFromStore frees the context, even when it fails.
        let ptr = ctx.0;
        std::mem::forget(ctx);
        // SAFETY: `ptr` is a live context from `find` whose reference we own; the call consumes
        // that reference in every case (see above), and `ptr` is not used again.
        unsafe { CertDeleteCertificateFromStore(ptr) }.map_err(|e| {
            map_code(&format!("delete {thumbprint} from LocalMachine\\{}", store_name(store)), code_of(&e))
        })?;
        removed = true;
    }
    if removed {
        // Wine otherwise loses the delete at process exit; a no-op for Windows' registry stores.
        // SAFETY: `s` is open; CERT_STORE_CTRL_COMMIT takes no parameter (null).
        unsafe { CertControlStore(s.0, CERT_CONTROL_STORE_FLAGS(0), CERT_STORE_CTRL_COMMIT, None) }
            .map_err(|e| map_code(&format!("commit LocalMachine\\{}", store_name(store)), code_of(&e)))?;
    }
    Ok(removed)
}
