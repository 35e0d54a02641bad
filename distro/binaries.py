"""The upstream binaries Flatcar nodes run, pinned by version, URL and sha256.

Facts, not code: the digests are those of the files served at the URLs below, as recorded in kubespray's
`roles/kubespray_defaults/vars/main/checksums.yml` (kubernetes-sigs/kubespray, history up to commit 46dbdd399,
2026), amd64 only. `stellwerk images sysext` refuses any download whose digest differs, and a Kubernetes version
without a pin here (it says so, before downloading anything) unless the operator gives their own binaries with
`--binary`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Artifact:
    """One upstream file: a binary, or a release archive whose members are the binaries."""

    name: str
    version: str
    url: str
    sha256: str
    members: tuple[tuple[str, str], ...] = ()  # (path in the archive, binary name) for archives; empty for a binary


KUBERNETES_URL = "https://dl.k8s.io/release/v{version}/bin/linux/amd64/{binary}"
ETCD_URL = "https://github.com/etcd-io/etcd/releases/download/v{version}/etcd-v{version}-linux-amd64.tar.gz"

KUBELET_SHA256 = {
    "1.29.0": "e1c38137db8d8777eed8813646b59bf4d22d19b9011ab11dc28e2e34f6b80a05",
    "1.29.1": "1b1975c58d38be1a99a8bcba4564ac489afd223b0abe9f2ab08bbde89d2412a3",
    "1.29.2": "f71a85039b71fe08f1c063a93d61a1c952dc8f9a8c6be9b13fbdac8f0d9ff960",
    "1.29.3": "d8b55a2f8a87c8cd2cbf867d76d1d7f98b7198a740db19bad6ed7b8b813de771",
    "1.29.4": "58571f0ed62543a9bbac541e52c15d8385083113a463e23aec1341d0b5043939",
    "1.29.5": "261dc3f3c384d138835fe91a02071c642af94abb0cca56ebc04719240440944c",
    "1.29.6": "a946789d4fef64e6f5905dbd7dca01d4c3abd302d0da7958fdaa924fe2729c0b",
    "1.29.7": "f16329e64f5b2204c1cb906f694abebb7f6869d56e6e8b60b54afa0057006b84",
    "1.29.8": "df6e130928403af8b4f49f1197e26f2873a147cd0e23aa6597a26c982c652ae0",
    "1.29.9": "1bf6e9e9a5612ea4f6e1a8f541a08be93fdf144b1430147de6916dae363c34a2",
    "1.29.10": "4cc094062cd1cff49ca551208635669ab86e3982d38e8d0a77ab833a941ff708",
    "1.29.11": "1aaa9025cceac0c9a4df295a58aa79d8932a5b13a43c8910412c9ef970c42d21",
    "1.30.0": "32a32ec3d7e7f8b2648c9dd503ce9ef63b4af1d1677f5b5aed7846fb02d66f18",
    "1.30.1": "87bd6e5de9c0769c605da5fedb77a35c8b764e3bda1632447883c935dcf219d3",
    "1.30.2": "6923abe67ef069afca61c71c585023840426e802b198298055af3a82e11a4e52",
    "1.30.3": "9a37ddd5ea026639b7d85e98fa742e392df7aa5ec917bed0711a451613de3c1c",
    "1.30.4": "0c02c0f997b3e9769eae7ca051856054411fca947b3d5409d991ce1964dd0e69",
    "1.30.5": "9b4b8f8b33c988372cc9c67791418028ca2cef4a4b4b8d98ab67d6f21275a11a",
    "1.30.6": "9d5585448bc34d37f70171c282febaa10d32687bfee4f8e4467c1bf149674d50",
    "1.30.7": "4b2fb90661e2b7be8b34b5bd405652590f6351a9f55194430fa16d547a7c9d16",
    "1.30.8": "7b5191dfed6a27faadefebdc4a3b602b9a76adfc58fd04c50307f1377eabc590",
    "1.30.9": "59c61c8018686bb58be96481f8aa3abe42bba9f791c6dd3c9d4a2ed697187e5b",
    "1.30.10": "0c7aa1db3fa339aa13af0f825d25a76b3c74f785d4fcd49d6a0bc5a96f0971f0",
    "1.30.11": "59177fc92e2b2bb988f7d8d39682ea9e3d9d883273c9c8b51b39502d9b965431",
    "1.31.0": "39e7f1c61c8389ea7680690f8bd5dd733672fa16875ae598df0fd8c205df57a9",
    "1.31.1": "50619fff95bdd7e690c049cc083f495ae0e7c66d0cdf6a8bcad298af5fe28438",
    "1.31.2": "b0de6290267bbb4f6bcd9c4d50bb331e335f8dc47653644ae278844bb04c1fb6",
    "1.31.3": "a5c9e871541251db15436fc307d945217e160d12920730070417ba8037e090df",
    "1.31.4": "9062fbb2b6054ecab07b9e841b0a49ab4acc224860b01c218d01ba95017c5e49",
    "1.31.5": "4fdedf2b6e3e8c4976c3cd000edf9ae61c94f0d6024ffe8b06bae6218ff2c94e",
    "1.31.6": "ea50176095dd4650f6b270c79cf6d30deaaeb96ffa7d1eaac6924428cc9d2486",
    "1.31.7": "279e766a1a7c0dce2efae452c9de1e52b169df31c4b75c9d3b7d51f767ae6d42",
    "1.31.8": "02697f8d14fc36089954380730f300df78b63dada1dc6f52d8e60bd5ce217d48",
    "1.31.9": "4e5e2bce4e80575a253654877f0156393d79647a36afb784da27f3ddef446456",
    "1.31.10": "14cb1bf4e3357b1edde13ac9fc609a57ea010cfc8130b7ff66b68da24642d7da",
    "1.31.11": "7bdace3eb4c7a6d6b9cf3f9e84e5972b2885bf5bc20a92361ca527e5c228542f",
    "1.31.12": "43f4a2ff9d5f40419f74977ed6e1939c4f8db51b0f2e63a98546e146d683c299",
    "1.32.0": "5ad4965598773d56a37a8e8429c3dc3d86b4c5c26d8417ab333ae345c053dae2",
    "1.32.1": "967dc8984651c48230a2ff5319e22cbf858452e974104a19bbade5d1708f72ad",
    "1.32.2": "9927fee1678202719075d8d546390bcda86c9e519b811fb7f4820b6823f84cab",
    "1.32.3": "024bb7faffa787c7717a2b37398a8c6df35694a8585a73074b052c3f4c4906ce",
    "1.32.4": "3e0c265fe80f3ea1b7271a00879d4dbd5e6ea1e91ecf067670c983e07c33a6f4",
    "1.32.5": "2b2988edd1646bf139dee6956d4283c520ff151a36febd10701ffda4852b8250",
    "1.32.6": "aa37219c4796a2fbf5af7f37fb7f11998947f9fd0d0f30dbeb40c47d4e9c8777",
    "1.32.7": "7ab96898436475640cbd416b2446f33aba1c2cb62dae876302ff7775d850041c",
    "1.32.8": "7dfca4da9cdf592c0f70800e09fb42553765bc0951cade3d6e0c571daf3f23ee",
    "1.32.9": "fd7711d1f0c1e263e9332004858fc4a6c39462e3e2ee485706eea5297966ed9c",
    "1.32.10": "bfff8f244992162c0491f8f42d807165ed5c685aecfb3e8000412535ad18a873",
    "1.32.11": "02b25e87a3fe14e9ea74c10d3b1e204d12af30b8ce7ed11af2a985b49ddb0b83",
}

KUBECTL_SHA256 = {
    "1.29.0": "0e03ab096163f61ab610b33f37f55709d3af8e16e4dcc1eb682882ef80f96fd5",
    "1.29.1": "69ab3a931e826bf7ac14d38ba7ca637d66a6fcb1ca0e3333a2cafdf15482af9f",
    "1.29.2": "7816d067740f47f949be826ac76943167b7b3a38c4f0c18b902fffa8779a5afa",
    "1.29.3": "89c0435cec75278f84b62b848b8c0d3e15897d6947b6c59a49ddccd93d7312bf",
    "1.29.4": "10e343861c3cb0010161e703307ba907add2aeeeaffc6444779ad915f9889c88",
    "1.29.5": "603c8681fc0d8609c851f9cc58bcf55eeb97e2934896e858d0232aa8d1138366",
    "1.29.6": "339553c919874ebe3b719e9e1fcd68b55bc8875f9b5a005cf4c028738d54d309",
    "1.29.7": "e3df008ef60ea50286ea93c3c40a020e178a338cea64a185b4e21792d88c75d6",
    "1.29.8": "038454e0d79748aab41668f44ca6e4ac8affd1895a94f592b9739a0ae2a5f06a",
    "1.29.9": "7b0de2466458cc3c12cf8742dc800c77d4fa72e831aa522df65e510d33b329e2",
    "1.29.10": "24f2f09a635d36b2ce36eaebf191326e2b25097eec541a3e47fee6726ef06cef",
    "1.29.11": "14d7ea4ada60ff15ef3b7734a83c4d05cff164d4843b6f4c081a50b86547c17d",
    "1.30.0": "7c3807c0f5c1b30110a2ff1e55da1d112a6d0096201f1beb81b269f582b5d1c5",
    "1.30.1": "5b86f0b06e1a5ba6f8f00e2b01e8ed39407729c4990aeda961f83a586f975e8a",
    "1.30.2": "c6e9c45ce3f82c90663e3c30db3b27c167e8b19d83ed4048b61c1013f6a7c66e",
    "1.30.3": "abd83816bd236b266c3643e6c852b446f068fe260f3296af1a25b550854ec7e5",
    "1.30.4": "2ffd023712bbc1a9390dbd8c0c15201c165a69d394787ef03eda3eccb4b9ac06",
    "1.30.5": "b8aa921a580c3d8ba473236815de5ce5173d6fbfa2ccff453fa5eef46cc5ee7a",
    "1.30.6": "7a3adf80ca74b1b2afdfc7f4570f0005ca03c2812367ffb6ee2f731d66e45e61",
    "1.30.7": "3950ec7b81b9aa5a3856dd6155e42e1ad12a2fa8b050502f5a9652050f94a8ee",
    "1.30.8": "7f39bdcf768ce4b8c1428894c70c49c8b4d2eee52f3606eb02f5f7d10f66d692",
    "1.30.9": "d77041f285d9237c4aa451370c3ec6e5c042007dbb55c894f0a179b1d149bf32",
    "1.30.10": "bc74dbeefd4b9d53f03016f6778f3ffc9a72ef4ca7b7c80fd5dc1a41d52dcab7",
    "1.30.11": "228a8b2679f84de9192a1ac5ad527c9ab73b0f76c452ed74f11da812bbcfaa42",
    "1.31.0": "7c27adc64a84d1c0cc3dcf7bf4b6e916cc00f3f576a2dbac51b318d926032437",
    "1.31.1": "57b514a7facce4ee62c93b8dc21fda8cf62ef3fed22e44ffc9d167eab843b2ae",
    "1.31.2": "399e9d1995da80b64d2ef3606c1a239018660d8b35209fba3f7b0bc11c631c68",
    "1.31.3": "981f6b49577068bc174275184d8ee7105d8e54f40733792c519cd85023984c0f",
    "1.31.4": "298e19e9c6c17199011404278f0ff8168a7eca4217edad9097af577023a5620f",
    "1.31.5": "fbecbfd375b3686002c2e81d51c390172f5ffba3d6b47920d55342cb03f557af",
    "1.31.6": "c46b2f5b0027e919299d1eca073ebf13a4c5c0528dd854fc71a5b93396c9fa9d",
    "1.31.7": "80a3c83f00241cd402bc8688464e5e3eedd52a461ee41d882f19cf04ad6d0379",
    "1.31.8": "be0aa44a50a9aada4e9402e361ffb0d5bb1fd4f6950751399fcaf3b8b936a746",
    "1.31.9": "720d31a15368ad56993c127a7d4fa2688a8520029c2e6be86b1a877ad6f92624",
    "1.31.10": "f7e806b676bea3b4995e9c236445a5f24ae61ed3d5245c39d7b816d209b06a78",
    "1.31.11": "449674ed53789d63c94c147c689be986f4c135848ec91e1a64796ed896934b45",
    "1.31.12": "cf609add577be9c898c52027e800a008331d6b2a202ecc61413e847f7a12ccd0",
    "1.32.0": "646d58f6d98ee670a71d9cdffbf6625aeea2849d567f214bc43a35f8ccb7bf70",
    "1.32.1": "e16c80f1a9f94db31063477eb9e61a2e24c1a4eee09ba776b029048f5369db0c",
    "1.32.2": "4f6a959dcc5b702135f8354cc7109b542a2933c46b808b248a214c1f69f817ea",
    "1.32.3": "ab209d0c5134b61486a0486585604a616a5bb2fc07df46d304b3c95817b2d79f",
    "1.32.4": "10d739e9af8a59c9e7a730a2445916e04bc9cbb44bc79d22ce460cd329fa076c",
    "1.32.5": "aaa7e6ff3bd28c262f2d95c8c967597e097b092e9b79bcb37de699e7488e3e7b",
    "1.32.6": "0e31ebf882578b50e50fe6c43e3a0e3db61f6a41c9cded46485bc74d03d576eb",
    "1.32.7": "b8f24d467a8963354b028796a85904824d636132bef00988394cadacffe959c9",
    "1.32.8": "0fc709a8262be523293a18965771fedfba7466eda7ab4337feaa5c028aa46b1b",
    "1.32.9": "509ae171bac7ad3b98cc49f5594d6bc84900cf6860f155968d1059fde3be5286",
    "1.32.10": "6e14ef4e509e9f3d1dfc2815643f832f853d2d9f6622d4a0f83f77c7e4014b57",
    "1.32.11": "48581d0e808bd8b7d3c3fc014e86b170e25a987df04c8a879b982b28a5180815",
}

ETCD_SHA256 = {
    "3.5.16": "b414b27a5ad05f7cb01395c447c85d3227e3fb1c176e51757a283b817f645ccc",
}


def kubernetes_artifacts(version: str) -> tuple[Artifact, ...] | None:
    """kubelet and kubectl of Kubernetes `version`, or None when this release pins no digest for it."""
    if version not in KUBELET_SHA256 or version not in KUBECTL_SHA256:
        return None
    return tuple(Artifact(binary, version, KUBERNETES_URL.format(version=version, binary=binary), digests[version])
                 for binary, digests in (("kubelet", KUBELET_SHA256), ("kubectl", KUBECTL_SHA256)))


def etcd_artifacts(version: str) -> tuple[Artifact, ...] | None:
    """etcd's release archive, with etcd and etcdctl in it, or None when this release pins no digest for it."""
    if version not in ETCD_SHA256:
        return None
    top = f"etcd-v{version}-linux-amd64"
    return (Artifact("etcd", version, ETCD_URL.format(version=version), ETCD_SHA256[version],
                     members=((f"{top}/etcd", "etcd"), (f"{top}/etcdctl", "etcdctl"))),)
