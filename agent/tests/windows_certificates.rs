//! Certificate stores through the real Win32 backend (run under Wine in CI).
//!
//! Fixtures are test-only material generated once with OpenSSL (docs/windows.md, "Test fixtures"):
//! an RSA-2048 PFX (Wine imports RSA keys only) and an ECDSA public certificate. LocalMachine\Root
//! already holds ~150 CAs under Wine and real Windows: everything is matched by thumbprint.
#![cfg(windows)]

use ssis_agent::host::windows::WindowsHost;
use ssis_agent::host::{Host, HostError, SecretString};
use ssis_crds::CertStore;

const MASTER_THUMBPRINT: &str = "366A09ABBDF44FA33537249A05EA24A939AF71CF";
const MASTER_PFX_PASSWORD: &str = "Wine-Test-Pfx!1";
const WORKER_THUMBPRINT: &str = "04A79FCD32667979F28BFAF6C08FC273C006BE20";

/// RSA-2048 self-signed master certificate with its private key (PFX, 3DES/SHA-1, password
/// [`MASTER_PFX_PASSWORD`]).
const MASTER_PFX_HEX: &str = concat!(
    "308209B90201033082097F06092A864886F70D010701A08209700482096C308209683082041F06092A864886F70D0107",
    "06A08204103082040C0201003082040506092A864886F70D010701301C060A2A864886F70D010C0103300E0408A2A2E1",
    "3010E1BFD302020800808203D8670B726CCAE45148CB370BA2F95E466CA3C9A38AAE55BB2AE6D352370C23642722103A",
    "8DAE816159C29E0BCB774B01AF7F570DA243E8B6F24E437BA58F32D52367D1C5ED0C643255C7CC5D016EA03ABB4584A0",
    "59A5578A792FEAE22C39D34ECCD7FA84F988C91FA51986529E830CACA9CDC58972DF0D84FC579A08F3E1E63968A7DDCE",
    "BF9A1B211308C5D21732895298CE857008060D2A975EFAC539411179FBF647483B8DD20DE2924B93B0A74E18FB4EA6AE",
    "617ED64BC983E1F8FA59A8BEC02F0770D46C7DD04278D4F3E40657EAA1352C59DD37CAEE968344D62DF19B4B222A3207",
    "249E1FDAE6332193B5FC00A949C68411C36368EA12561FC6D69F7F4C007072B4F2842D603A1B223880961305C0FB5EEF",
    "A4ECD1206091C0B52581220FCD337892C591426224C5AA1478F92B2F51308FD71A29AE1E968F06C3EC04AD38D3959C2D",
    "8E98F4C99EE61DECE3E9961A8A764527643C255D99372D917192F8407A58265C85CF6363AF85886842AC6A0BCEA90DE2",
    "D876E04C0335DABCEA56E0827EA57D10BFA3BF08FC8EF635D803C3AA19962FC2CDE9FCD07D29159887F68436832598E0",
    "BF068665CB852182B92D790D95A3CF19C0CAB0AF14E929EFF108E35F11A770DEA72E38B1DAB5FB48C8E07AE0DDE90F62",
    "289CF55C409D7B72DDE7B2A0E05DDF3E114EC937B561AAC2FF3719D0D57596A1BB9EF36C69A93622DF17FD9119326FD3",
    "CE30EF7D707FE36593288372D5D40B7BC1997363EFC2FD3145294B1DD54E10ABBFF9721F5A254445FB556B6814FEEF53",
    "1A062E9BF36DD78DE2A9921CF2B9B0024D0E7D25DC6E976B32C7EC2E0A3640A769267347652F06C04087935518D5EA04",
    "CABA25A2DD89F8A59E7DC39F22ABFB1AC20942E0F166A15BB1378C517A532978512E864BF188B03AFD4B45223CF00D1C",
    "A06628F8A54ACC72689DE8D0FE7A920F8DA2FCF7DDD1C3FFE0CAA2F6C82F3DC9EB3C857661372E24461D4B8FD905D89B",
    "BF55BB1AFA7C80FFA5A2C346B9387552797509A10D31120D3B66C1ACC53BC134F54017809D808B76675858FD44E1C860",
    "901D719C01880C4FBAB7E6681C571464A9651DDD09B0BD8DA55533F33C30F246996B484C78F2CBD288A6491A68AFF259",
    "9E8F743479241BD02A1D5991623BC3236BE7AECA0EFEEB0FFE69CE6414C6B0D610286ADD1F5041570C8B1996F3B684EB",
    "612029D28E393F977067D0B5739A5F75C1D0A6DE4E18CBD1D585762506CF1C5073DD1456BBB476BFF6D2E135C2565090",
    "D08C86B13FF84A4BCF61A55C9BFF9370D3EFB90DB0E90301F8555A0E96D41E7908109D732F219BF000F5CEEA18DF178C",
    "08E0A1874026AB716C3B5F7B57B233B50CE9B2EC47ED477DA58913DA40044C0ACA9721F66D3082054106092A864886F7",
    "0D010701A08205320482052E3082052A30820526060B2A864886F70D010C0A0102A08204EE308204EA301C060A2A8648",
    "86F70D010C0103300E040803A7E1B6AF3A41C502020800048204C88A319BA0FF1B1136099F86A391B7467F90DEE9D229",
    "0CF89E28A3C2E42E8882122293D0308B00BB652F3FE322C4C89DDB3495F308EB01EC3E39DEDE74824523610F83501268",
    "1B289E57DBBD75FAC96AFD684B0927D3EEF7049DE6B56FBADDA13A6BF28E4A6DF7389D8A3D4EF3ED033B4287DE72AF23",
    "F883594E4EBAC22430C0667F3E939D3950108F978E4E3CE7B94400F6FCDC441AEF808B8DE9709B69890D36C8078B0C0B",
    "2838B653EA6D08B211B1A097131B6D3ACC777E8DBDC5830A7B4D0B98D6808B6BE4065C1ACA4B04089950B200B83BB4CE",
    "77C365E33EC6528FB2C23F88FEF5AD5D26AED28D97A263F7A0CA4A5440A4B70E6D92382587E9A6759F2F21F821680B79",
    "2B0D9D5ACC1250297BD1E341FCE211629191D9A1F520C1E623EDCC2E9B32CB21DBFB5CF4E27A3F168B90E64174DA492B",
    "595A50ACB9CE09C8EA5A9F078B337663CC587C14BA502CE65CB1F52AF13B436E1501EEF2B67BD76F08C277A1191D6389",
    "DC570D4A67E91BF354ED9245E074673F75D0871E127721A68760C947CEDF796F22C99B3688BB5A9665C3174D9D77F671",
    "70C05C0B965972B25B0800E568A048983C571B1159E5D03AF2C731CFC734289F0C122680F7F898674927AC0E5EF68961",
    "B6D02DCCFC8EA79EF1AACB6A5AD467D88455127304FEAEF1E227EF18632E8E8B810C53E9E20A511A1C9B32305B5F9099",
    "A631B85E817FCB50702625C25BF7F4256636129426F4A576C2AC7D7000840DF328F12450E7691FBA97F850B15D8B6B16",
    "C99500ED27965BC4C78AF6201A9AECD93C48420E3C66858FA17320A10DAE1911EE51A9D5B217D1AA5C4CD62788D8BD6A",
    "B23854F212A290AB9D66A66E24DEA350C569999EC0D3146C1188BB4B802D7F278E4C2AEC0D4B16C02B07B88428CFBEDD",
    "D7E3ACC3A9543965FF52A2FE8153E06C3345E79CBB5E8D199B2C68B7EB8D7130CFAE8097A2DA9B71C9257A1049EBC185",
    "CBFF92504B55AFA23828DCBC8F52FFD6CE1DFE6FA0A6EAFAB9AB65602B96E91A197AB058AE7621EF6DBFBF6B6DC8065D",
    "B9B4BCD1CCDDEE0C5D0C851A85EF6A471E4543A772973C47AEF677A49D6E46FDCA7EF53EDDF17884F3339B0C1DAC1E36",
    "B8850F0D23D32E2159619CF5F879B1F9E994E6A47FBB84000DABB45DF30272A319D3506AA430224734BBE6D333F0D391",
    "7D958A62D3DD28E89C2C76409A37CEB25085C93D4EE17E2B6B5C460C2F874F78E0003B040CDD65812E823324A92F65C6",
    "B057F91548B8BCE7B81C4D26789B8B138A2BB3CCBE971C44A11A3FE90A0DCC1EF59B21754CC25BC6260154943C0200AE",
    "DC1FD8A8C10C1E14E0365AEE0E311B01F644F8ABD08DFC57AA1974AA27920815C2389AC97239B65E0817C07317ABE325",
    "9D474B6A07E9071BF8923DA50487182642E753C592972492F3F2EC6929B2E5BBCF230EAD3DD45B1551E75D742084BD0E",
    "5DDE011A3FDE528AA06C9BC0EB1861A772DC9A9B59F492574FC8845D3BF0FAE27D22F7796012E9B256CF2615EC4100F8",
    "CA67C07B8BDB7B8111453ED9187079D4162208241D2AAB0CDE0DC6C88A3AEADECFB05EEF3209A3F9357722572CD59C46",
    "EE9767DB35564F4A43B4E69FBC1CD25E133879509A25D57854C59B8122B04433F8DEB07A7AF3F8AD400BEDD0E63E741E",
    "B51F0B377A22C1D8EBE1B627B0061A6DA5E7F1D7286C6A664DD62AE0BA98A6A3F0CE1E3BBB28FFA0D08A4E65C5A0964F",
    "9D01613125302306092A864886F70D01091531160414366A09ABBDF44FA33537249A05EA24A939AF71CF303130213009",
    "06052B0E03021A05000414EC5BE5CA2C6F0C55FA7B21950AF620034FEE12FB04084E1080D3113A44B102020800",
);

/// ECDSA P-256 self-signed worker certificate, public part only (DER).
const WORKER_CER_HEX: &str = concat!(
    "308201B030820157A00302010202143BEEE4678167A6E7F6EFA19A1B5512083921114E300A06082A8648CE3D04030230",
    "20311E301C06035504030C15737369732D776F726B65722D77696E652D746573743020170D3236313132323032343634",
    "315A180F32313236313032393032343634315A3020311E301C06035504030C15737369732D776F726B65722D77696E65",
    "2D746573743059301306072A8648CE3D020106082A8648CE3D0301070342000466CA53373183B42CBD645060D9EBC74F",
    "3DEB07EB1CE5B1FD6E12A6BCC7140ADFAE1A168AD6E2E09C5C7CEF7661E024F686A873DEE9CE15B3FA36BE11A01F8DB8",
    "A36D306B301D0603551D0E041604140449CA32C6A7CCBE1720CBEFA57F3983C44EC0B0301F0603551D23041830168014",
    "0449CA32C6A7CCBE1720CBEFA57F3983C44EC0B0300F0603551D130101FF040530030101FF30180603551D110411300F",
    "820D737369732D776F726B65722D31300A06082A8648CE3D0403020347003044022100833E075B9733C1CB972E37901B",
    "5513624B09002A41EDFE466CA893090E21EA4C021F1F68EBE0F2997BF46FE84837BE0FADF26D1C3EA5DA29F1FC92DF02",
    "05B3165A",
);

/// Wine loads a registry-backed store into memory on open and may write that snapshot back when
/// another handle in the same process commits, resurrecting a just-deleted certificate. The
/// agent uses one host at a time; the tests do the same.
static STORES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    STORES.lock().unwrap_or_else(|e| e.into_inner())
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn registry_path(store: &str, thumbprint: &str) -> String {
    format!(r"SOFTWARE\Microsoft\SystemCertificates\{store}\Certificates\{thumbprint}")
}

fn find(host: &WindowsHost, store: CertStore, thumbprint: &str) -> Option<ssis_agent::host::CertInfo> {
    host.list_certificates(store).unwrap().into_iter().find(|c| c.thumbprint == thumbprint)
}

/// Thumbprints in LocalMachine\Root other than this file's fixtures (tests run in parallel).
fn others(host: &WindowsHost) -> std::collections::BTreeSet<String> {
    host.list_certificates(CertStore::Root)
        .unwrap()
        .into_iter()
        .map(|c| c.thumbprint)
        .filter(|t| t != MASTER_THUMBPRINT && t != WORKER_THUMBPRINT)
        .collect()
}

#[test]
fn pfx_import_list_and_remove_in_my_and_root() {
    let _serial = lock();
    let mut host = WindowsHost::new();
    let pfx = unhex(MASTER_PFX_HEX);
    let password = SecretString::new(MASTER_PFX_PASSWORD);
    // One test for both stores: Wine keeps a single key container per key, so the two imports
    // must not race.
    for (store, name) in [(CertStore::My, "My"), (CertStore::Root, "Root")] {
        host.remove_certificate(store, MASTER_THUMBPRINT).unwrap();

        let thumbprint = host.import_pfx(store, &pfx, &password).unwrap();
        assert_eq!(thumbprint, MASTER_THUMBPRINT);
        let cert = find(&host, store, MASTER_THUMBPRINT).expect("imported certificate is listed");
        assert_eq!(cert.subject, "CN=ssis-agent-wine-test");
        assert_eq!(cert.dns_names, vec!["ssis-master.test.invalid".to_string(), "ssis-master".to_string()]);
        assert_eq!(cert.not_after, "2126-10-29T02:35:02Z");
        assert!(cert.has_private_key, "PFX import links the private key");
        // Where Windows (and Wine) persist LocalMachine certificates.
        assert!(host.registry_key_exists(&registry_path(name, MASTER_THUMBPRINT)).unwrap());

        // Importing again is idempotent.
        assert_eq!(host.import_pfx(store, &pfx, &password).unwrap(), MASTER_THUMBPRINT);
        let copies =
            host.list_certificates(store).unwrap().iter().filter(|c| c.thumbprint == MASTER_THUMBPRINT).count();
        assert_eq!(copies, 1);

        assert!(host.remove_certificate(store, MASTER_THUMBPRINT).unwrap());
        assert!(find(&host, store, MASTER_THUMBPRINT).is_none());
        assert!(!host.registry_key_exists(&registry_path(name, MASTER_THUMBPRINT)).unwrap(), "delete is committed");
        assert!(!host.remove_certificate(store, MASTER_THUMBPRINT).unwrap(), "removing an absent cert is Ok(false)");
    }
}

/// The fixture above was made by OpenSSL. This PFX is made the way the operator's `certs::issue`
/// makes host material, with the crates that ship: an RSA-2048 key generated by aws-lc-rs through
/// rcgen, packaged by p12-keystore with 3DES + HMAC-SHA1. It must import with its private key.
#[test]
fn an_rsa_pfx_made_like_the_operators_imports_with_its_private_key() {
    use p12_keystore::{
        Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey, PrivateKeyChain,
    };
    use sha1::Digest as _;
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["ssis-master.generated.invalid".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "ssis-agent-wine-generated");
    let der = params.self_signed(&key).unwrap().der().to_vec();
    let chain = PrivateKeyChain::new(
        sha1::Sha1::digest(&der).to_vec(),
        PrivateKey::from_der(&key.serialize_der()).unwrap(),
        [Certificate::from_der(&der).unwrap()],
    );
    let mut store = KeyStore::new();
    store.add_entry("ssis-scale-out", KeyStoreEntry::PrivateKeyChain(chain));
    let password = "Generated-Pfx-2";
    let pfx = store
        .writer(password)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
        .mac_algorithm(MacAlgorithm::HmacSha1)
        .write()
        .unwrap();
    let thumbprint = ssis_agent::certificates::thumbprint(&der);

    let _serial = lock();
    let mut host = WindowsHost::new();
    assert_eq!(host.import_pfx(CertStore::My, &pfx, &SecretString::new(password)).unwrap(), thumbprint);
    let cert = find(&host, CertStore::My, &thumbprint).expect("imported certificate is listed");
    assert_eq!(cert.subject, "CN=ssis-agent-wine-generated");
    assert_eq!(cert.dns_names, vec!["ssis-master.generated.invalid".to_string()]);
    assert!(cert.has_private_key, "PFX import links the private key");
    assert!(host.remove_certificate(CertStore::My, &thumbprint).unwrap());
}

#[test]
fn pfx_with_wrong_password_is_invalid_and_not_echoed() {
    let _serial = lock();
    let mut host = WindowsHost::new();
    let wrong = "not-the-password-7f3a";
    let err = host.import_pfx(CertStore::My, &unhex(MASTER_PFX_HEX), &SecretString::new(wrong)).unwrap_err();
    assert!(matches!(err, HostError::Invalid(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(wrong));
}

#[test]
fn public_certificate_import_list_and_remove_in_root() {
    let _serial = lock();
    let mut host = WindowsHost::new();
    let der = unhex(WORKER_CER_HEX);
    host.remove_certificate(CertStore::Root, WORKER_THUMBPRINT).unwrap();
    let before = others(&host);
    assert!(before.len() > 10, "LocalMachine\\Root holds the preinstalled CAs");

    assert_eq!(host.import_certificate(CertStore::Root, &der).unwrap(), WORKER_THUMBPRINT);
    let cert = find(&host, CertStore::Root, WORKER_THUMBPRINT).expect("imported certificate is listed");
    assert_eq!(cert.subject, "CN=ssis-worker-wine-test");
    assert_eq!(cert.dns_names, vec!["ssis-worker-1".to_string()]);
    assert!(!cert.has_private_key);
    assert!(host.registry_key_exists(&registry_path("Root", WORKER_THUMBPRINT)).unwrap());
    assert_eq!(others(&host), before, "other CAs are untouched");

    // Idempotent import keeps one copy.
    assert_eq!(host.import_certificate(CertStore::Root, &der).unwrap(), WORKER_THUMBPRINT);
    let copies =
        host.list_certificates(CertStore::Root).unwrap().iter().filter(|c| c.thumbprint == WORKER_THUMBPRINT).count();
    assert_eq!(copies, 1);

    assert!(host.remove_certificate(CertStore::Root, WORKER_THUMBPRINT).unwrap());
    assert!(!host.remove_certificate(CertStore::Root, WORKER_THUMBPRINT).unwrap());
    assert!(find(&host, CertStore::Root, WORKER_THUMBPRINT).is_none());
    assert!(!host.registry_key_exists(&registry_path("Root", WORKER_THUMBPRINT)).unwrap());
    assert_eq!(others(&host), before);
}

#[test]
fn garbage_material_and_bad_thumbprints_are_invalid() {
    let _serial = lock();
    let mut host = WindowsHost::new();
    let err = host.import_certificate(CertStore::Root, b"not a certificate").unwrap_err();
    assert!(matches!(err, HostError::Invalid(_)), "{err:?}");
    let err = host.import_pfx(CertStore::My, b"not a pfx", &SecretString::new("x")).unwrap_err();
    assert!(matches!(err, HostError::Invalid(_)), "{err:?}");
    let err = host.remove_certificate(CertStore::Root, "ABC").unwrap_err();
    assert!(matches!(err, HostError::Invalid(_)), "{err:?}");
}
