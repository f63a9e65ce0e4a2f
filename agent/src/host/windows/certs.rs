//! LocalMachine\Root and LocalMachine\My certificate stores (crypt32).

use ssis_crds::CertStore;
use windows::Win32::Foundation::{ERROR_INVALID_PASSWORD, HLOCAL, LocalFree};
use windows::Win32::Security::Cryptography::{
    CERT_ALT_NAME_INFO, CERT_CONTEXT, CERT_FIND_SHA1_HASH, CERT_HASH_PROP_ID, CERT_KEY_PROV_INFO_PROP_ID,
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

use super::util::{code_of, filetime_to_rfc3339, from_wide, hex_upper, map_code, parse_thumbprint, wide};
use crate::host::{CertInfo, HostError, SecretString};

const ENCODING: CERT_QUERY_ENCODING_TYPE = CERT_QUERY_ENCODING_TYPE(X509_ASN_ENCODING.0 | PKCS_7_ASN_ENCODING.0);
/// `CERT_ALT_NAME_DNS_NAME` (wincrypt.h); the crate puts it behind another feature.
const CERT_ALT_NAME_DNS_NAME: u32 = 3;

/// Closes the store on drop.
pub(crate) struct Store(pub(crate) HCERTSTORE);

impl Drop for Store {
    fn drop(&mut self) {
        unsafe {
            let _ = CertCloseStore(Some(self.0), 0);
        }
    }
}

/// Frees a certificate context on drop.
pub(crate) struct Ctx(pub(crate) *const CERT_CONTEXT);

impl Drop for Ctx {
    fn drop(&mut self) {
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

fn thumbprint(ctx: *const CERT_CONTEXT) -> Result<String, HostError> {
    let mut hash = [0u8; 20];
    let mut len = hash.len() as u32;
    unsafe { CertGetCertificateContextProperty(ctx, CERT_HASH_PROP_ID, Some(hash.as_mut_ptr().cast()), &mut len) }
        .map_err(|e| map_code("read certificate hash", code_of(&e)))?;
    Ok(hex_upper(&hash[..len as usize]))
}

fn has_private_key(ctx: *const CERT_CONTEXT) -> bool {
    let mut len = 0u32;
    unsafe { CertGetCertificateContextProperty(ctx, CERT_KEY_PROV_INFO_PROP_ID, None, &mut len) }.is_ok()
}

fn subject(ctx: &CERT_CONTEXT) -> String {
    let info = unsafe { &*ctx.pCertInfo };
    // Reverse order prints `CN=..., O=...` like certmgr and PowerShell.
    let ty = CERT_STRING_TYPE(CERT_X500_NAME_STR.0 | CERT_NAME_STR_REVERSE_FLAG);
    let n = unsafe { CertNameToStrW(ctx.dwCertEncodingType, &info.Subject, ty, None) };
    let mut buf = vec![0u16; n.max(1) as usize];
    unsafe { CertNameToStrW(ctx.dwCertEncodingType, &info.Subject, ty, Some(&mut buf)) };
    from_wide(&buf)
}

fn dns_names(ctx: &CERT_CONTEXT) -> Vec<String> {
    let info = unsafe { &*ctx.pCertInfo };
    if info.cExtension == 0 || info.rgExtension.is_null() {
        return Vec::new();
    }
    let extensions = unsafe { std::slice::from_raw_parts(info.rgExtension, info.cExtension as usize) };
    let ext = unsafe { CertFindExtension(szOID_SUBJECT_ALT_NAME2, extensions) };
    if ext.is_null() {
        return Vec::new();
    }
    let value = unsafe { &(*ext).Value };
    let encoded = unsafe { std::slice::from_raw_parts(value.pbData, value.cbData as usize) };
    let mut decoded: *mut CERT_ALT_NAME_INFO = std::ptr::null_mut();
    let mut size = 0u32;
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
    let names = unsafe {
        let info = &*decoded;
        std::slice::from_raw_parts(info.rgAltEntry, info.cAltEntry as usize)
            .iter()
            .filter(|e| e.dwAltNameChoice == CERT_ALT_NAME_DNS_NAME)
            .map(|e| super::util::pwstr_to_string(e.Anonymous.pwszDNSName))
            .collect()
    };
    unsafe {
        let _ = LocalFree(Some(HLOCAL(decoded.cast())));
    }
    names
}

fn cert_info(ctx: *const CERT_CONTEXT) -> Result<CertInfo, HostError> {
    let c = unsafe { &*ctx };
    let info = unsafe { &*c.pCertInfo };
    let not_after = (u64::from(info.NotAfter.dwHighDateTime) << 32) | u64::from(info.NotAfter.dwLowDateTime);
    Ok(CertInfo {
        thumbprint: thumbprint(ctx)?,
        subject: subject(c),
        dns_names: dns_names(c),
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
        let ctx = unsafe { CertEnumCertificatesInStore(s.0, (!prev.is_null()).then_some(prev)) };
        if ctx.is_null() {
            return Ok(out);
        }
        match cert_info(ctx) {
            Ok(info) => out.push(info),
            Err(e) => {
                drop(Ctx(ctx));
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
    Ok((!ctx.is_null()).then_some(Ctx(ctx)))
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
    let blob = CRYPT_INTEGER_BLOB { cbData: pfx.len() as u32, pbData: pfx.as_ptr().cast_mut() };
    let mut pw = wide(password.expose());
    // Machine key set so services can use the key. No PKCS12_ALLOW_OVERWRITE_KEY: Windows would
    // silently replace an existing key container, and Wine rejects the flag (error 120).
    let imported = unsafe { PFXImportCertStore(&blob, PCWSTR(pw.as_ptr()), CRYPT_MACHINE_KEYSET) };
    pw.iter_mut().for_each(|c| unsafe { std::ptr::write_volatile(c, 0) });
    let temp = Store(imported.map_err(|e| material_error("import PFX", code_of(&e)))?);

    // The end-entity certificate is the one that carries the private key.
    let mut prev: *const CERT_CONTEXT = std::ptr::null();
    loop {
        let ctx = unsafe { CertEnumCertificatesInStore(temp.0, (!prev.is_null()).then_some(prev)) };
        if ctx.is_null() {
            return Err(HostError::Invalid("PFX holds no certificate with a private key".into()));
        }
        if has_private_key(ctx) {
            let ctx = Ctx(ctx);
            let thumbprint = thumbprint(ctx.0)?;
            unsafe { CertAddCertificateContextToStore(Some(target.0), ctx.0, CERT_STORE_ADD_REPLACE_EXISTING, None) }
                .map_err(|e| map_code(&format!("add {thumbprint} to LocalMachine\\{}", store_name(store)), code_of(&e)))?;
            return Ok(thumbprint);
        }
        prev = ctx;
    }
}

pub fn import_certificate(store: CertStore, der: &[u8]) -> Result<String, HostError> {
    let target = open(store)?;
    let mut added: *mut CERT_CONTEXT = std::ptr::null_mut();
    // Use-existing keeps a present copy (and its private-key link) untouched: idempotent.
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
    let ctx = Ctx(added);
    thumbprint(ctx.0)
}

pub fn remove(store: CertStore, thumbprint: &str) -> Result<bool, HostError> {
    let s = open(store)?;
    let mut removed = false;
    while let Some(ctx) = find(&s, thumbprint)? {
        // CertDeleteCertificateFromStore frees the context, even when it fails.
        let ptr = ctx.0;
        std::mem::forget(ctx);
        unsafe { CertDeleteCertificateFromStore(ptr) }.map_err(|e| {
            map_code(&format!("delete {thumbprint} from LocalMachine\\{}", store_name(store)), code_of(&e))
        })?;
        removed = true;
    }
    if removed {
        // Wine otherwise loses the delete at process exit; a no-op for Windows' registry stores.
        unsafe { CertControlStore(s.0, CERT_CONTROL_STORE_FLAGS(0), CERT_STORE_CTRL_COMMIT, None) }
            .map_err(|e| map_code(&format!("commit LocalMachine\\{}", store_name(store)), code_of(&e)))?;
    }
    Ok(removed)
}
