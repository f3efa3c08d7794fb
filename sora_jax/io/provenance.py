"""C2PA content credentials for the files sora_jax writes (on the `c2pa-python` package).

Every output carries a signed C2PA manifest: a `c2pa.actions` assertion (`c2pa.created` with
digitalSourceType `trainedAlgorithmicMedia`, or `c2pa.edited` with
`compositeWithTrainedAlgorithmicMedia` and the input file as parent ingredient) and an
`org.sora_jax.generation` assertion: prompt (left out when None), seed, sampler settings, weights
digest, model name.

Where the manifest goes (c2pa-python 0.38 / c2pa-rs 0.91; `embeds()` asks c2pa at run time):

  embedded: .mp4 .mov .m4v (BMFF hash), .avi .gif .png .jpg .webp (data hash); tested: mp4 mov
            gif png jpg
  sidecar:  .webm .mkv and anything else: `FILE.c2pa` next to the file, a standard C2PA manifest
            store whose `c2pa.hash.data` hard binding covers every byte of FILE; `verify` reads it.

Sidecars are signed through c2pa-rs's C API (`c2pa_builder_sign_data_hashed_embeddable`), which
c2pa-python ships but does not wrap yet; hence the pin to c2pa-python 0.38.*.

Keys: `init_keys` makes a local ES256 chain (self-made root CA -> signing cert; c2pa-rs rejects
self-signed end-entity certs). Files it signs verify as `valid` with a `signingCredential.untrusted`
warning; pass that chain as `verify(..., trust_anchors=cert)` to see `trusted` as well. Signing
uses no timestamp authority (nothing online), so a signature lives as long as the certificate.
"""
from __future__ import annotations

import ctypes
import datetime
import hashlib
import json
import os
import pathlib
import tempfile
from typing import Any, Iterable

PathLike = str | os.PathLike
GENERATION_LABEL = "org.sora_jax.generation"
CERT_NAME, KEY_NAME = "c2pa_cert.pem", "c2pa_key.pem"
ENV_CERT, ENV_KEY = "SORA_JAX_C2PA_CERT", "SORA_JAX_C2PA_KEY"
SIDECAR_SUFFIX = ".c2pa"
_IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
_MIME = {".mp4": "video/mp4", ".m4v": "video/x-m4v", ".mov": "video/quicktime",
         ".avi": "video/x-msvideo", ".gif": "image/gif", ".png": "image/png", ".jpg": "image/jpeg",
         ".jpeg": "image/jpeg", ".webp": "image/webp", ".webm": "video/webm",
         ".mkv": "video/x-matroska"}
# c2pa-rs embeds a JPEG thumbnail by default: a 3 kB png became 190 kB. Outputs stay small.
_SETTINGS = {"builder": {"thumbnail": {"enabled": False}}}
_UNTRUSTED = "signingCredential.untrusted"


class ProvenanceError(RuntimeError):
  """Content credentials could not be made or read (missing package, bad keys, c2pa failure)."""


def _c2pa():
  try:
    import c2pa  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ProvenanceError("C2PA needs c2pa-python: pip install 'sora_jax[provenance]'") from e
  return c2pa


def default_keys_dir() -> pathlib.Path:
  base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
  return pathlib.Path(base) / "sora_jax" / "keys"


def init_keys(directory: PathLike | None = None, *, overwrite: bool = False,
              days: int = 3650) -> tuple[str, str]:
  """Writes a local ES256 test chain: `c2pa_cert.pem` (leaf + root) and `c2pa_key.pem` (0600)."""
  # pylint: disable=import-outside-toplevel
  from cryptography import x509
  from cryptography.hazmat.primitives import hashes, serialization
  from cryptography.hazmat.primitives.asymmetric import ec
  from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

  d = pathlib.Path(directory) if directory is not None else default_keys_dir()
  cert_path, key_path = d / CERT_NAME, d / KEY_NAME
  if not overwrite and (cert_path.exists() or key_path.exists()):
    raise FileExistsError(f"C2PA keys already exist in {d}; pass overwrite=True to replace them "
                          "(files signed with the old key then no longer match it)")
  d.mkdir(parents=True, exist_ok=True)

  def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sora_jax (local test)")])

  def usage(sign=False, ca=False):
    return x509.KeyUsage(sign, False, False, False, False, ca, ca, False, False)

  now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
  root_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))

  def builder(subject, issuer, public_key, lifetime):
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=lifetime))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))

  root = (builder(name("sora_jax local root CA"), name("sora_jax local root CA"),
                  root_key.public_key(), days + 365)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage(ca=True), critical=True)
          .sign(root_key, hashes.SHA256()))
  leaf = (builder(name("sora_jax signer"), root.subject, leaf_key.public_key(), days)
          .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
          .add_extension(usage(sign=True), critical=True)
          .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                         critical=False)
          .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                         critical=False)
          .sign(root_key, hashes.SHA256()))
  pem = serialization.Encoding.PEM
  _atomic_write(cert_path, leaf.public_bytes(pem) + root.public_bytes(pem), 0o644)
  _atomic_write(key_path, leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()), 0o600)
  return str(cert_path), str(key_path)


def find_keys(config_dir: PathLike | None = None) -> tuple[str, str] | None:
  """(cert, key) from `config_dir`, else $SORA_JAX_C2PA_CERT/$SORA_JAX_C2PA_KEY, else the default
  directory of `init_keys` (~/.config/sora_jax/keys); None when no complete pair exists there."""
  if config_dir is not None:
    pair = (pathlib.Path(config_dir) / CERT_NAME, pathlib.Path(config_dir) / KEY_NAME)
  elif os.environ.get(ENV_CERT) or os.environ.get(ENV_KEY):
    pair = (pathlib.Path(os.environ.get(ENV_CERT, "")), pathlib.Path(os.environ.get(ENV_KEY, "")))
  else:
    pair = (default_keys_dir() / CERT_NAME, default_keys_dir() / KEY_NAME)
  return (str(pair[0]), str(pair[1])) if all(p.is_file() for p in pair) else None


def _jsonable(x):   # numpy / jax scalars and arrays; anything else as its str
  return x.tolist() if hasattr(x, "tolist") else list(x) if isinstance(x, set) else str(x)


def _numbers_as_text(x):
  """Lists of numbers as 'a,b,...': c2pa stores a custom assertion's number arrays as byte
  strings (verify reads [0.2, 1.0] back as '' and [1, 2] as 'AQI='); strings and dicts survive."""
  if isinstance(x, dict):
    return {k: _numbers_as_text(v) for k, v in x.items()}
  if isinstance(x, list):
    if x and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x):
      return ",".join(str(v) for v in x)
    return [_numbers_as_text(v) for v in x]
  return x


def manifest_for(*, prompt: str | None, seed: int, sampler: dict, weights_digest: str, model: str,
                 action: str = "c2pa.created", ingredients: Iterable[PathLike] = (),
                 version: str, title: str | None = None) -> dict[str, Any]:
  """The C2PA manifest definition of one output. `ingredients` (the input files of an edit or
  extension) are named in the generation assertion; pass the same paths to `sign`, which hashes
  them into the manifest. `title` defaults to the signed file's name."""
  ingredients = [os.fspath(p) for p in ingredients]
  sources = {"c2pa.created": "trainedAlgorithmicMedia",
             "c2pa.edited": "compositeWithTrainedAlgorithmicMedia"}
  if action not in sources:
    raise ValueError(f"action must be 'c2pa.created' or 'c2pa.edited', got {action!r}")
  if bool(ingredients) != (action == "c2pa.edited"):
    raise ValueError("the input files of an edit/extension are its ingredients: c2pa.edited needs "
                     f"at least one, c2pa.created none (got {action!r} with {ingredients})")
  agent = {"name": "sora_jax", "version": str(version)}
  generation: dict[str, Any] = {}
  if prompt is not None:
    generation["prompt"] = str(prompt)
  sampler = _numbers_as_text(json.loads(json.dumps(dict(sampler), default=_jsonable)))
  generation.update(seed=int(seed), sampler=sampler, weights_sha256=str(weights_digest),
                    model=str(model))
  if ingredients:
    generation["inputs"] = [os.path.basename(p) for p in ingredients]
  manifest = {
      "claim_generator_info": [agent],
      "assertions": [
          {"label": "c2pa.actions", "data": {"actions": [
              {"action": action, "digitalSourceType": _IPTC + sources[action],
               "softwareAgent": agent}]}},
          {"label": GENERATION_LABEL, "data": generation},
      ]}
  if title is not None:
    manifest["title"] = str(title)
  return manifest


def _pem(x: bytes | str | PathLike) -> bytes:   # PEM bytes, PEM text or a path to a PEM file
  if isinstance(x, str) and x.lstrip().startswith("-----BEGIN"):
    return x.encode()
  return x if isinstance(x, bytes) else pathlib.Path(x).read_bytes()


def _mime(path: pathlib.Path) -> str:
  return _MIME.get(path.suffix.lower(), "application/octet-stream")


def embeds(path: PathLike) -> bool:
  """Whether c2pa can embed a manifest into this file type (else `sign` writes `FILE.c2pa`)."""
  ext = pathlib.Path(path).suffix.lower().lstrip(".")
  return bool(ext) and ext in _c2pa().Builder.get_supported_mime_types()


def _context(c2pa, extra: dict | None = None):
  return c2pa.Context(settings=c2pa.Settings.from_dict({**_SETTINGS, **(extra or {})}))


def _atomic_write(path: pathlib.Path, data: bytes | None, mode: int, writer=None):
  """Writes `data` (or calls `writer(tmp_path)`) to a temp file beside `path`, then os.replace."""
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data or b"")
    if writer is not None:
      writer(tmp)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def _file_sha256(path: PathLike) -> bytes:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.digest()


def _sidecar_manifest(builder, signer, path: pathlib.Path) -> bytes:
  """A manifest store whose c2pa.hash.data binding covers all of `path` (no exclusions)."""
  try:
    from c2pa import c2pa as native  # pylint: disable=import-outside-toplevel
    lib, ptr = native._lib, ctypes.POINTER  # pylint: disable=protected-access
    out_t = ptr(ptr(ctypes.c_ubyte))
    place = lib.c2pa_builder_data_hashed_placeholder
    sign = lib.c2pa_builder_sign_data_hashed_embeddable
    place.argtypes = [ptr(native.C2paBuilder), ctypes.c_size_t, ctypes.c_char_p, out_t]
    sign.argtypes = [ptr(native.C2paBuilder), ptr(native.C2paSigner), ctypes.c_char_p,
                     ctypes.c_char_p, ptr(native.C2paStream), out_t]
    place.restype = sign.restype = ctypes.c_int64
    read_error = native._read_native_error  # pylint: disable=protected-access
  except (ImportError, AttributeError) as e:
    raise ProvenanceError(f"this c2pa-python cannot sign sidecar manifests ({e}); pin "
                          "c2pa-python 0.38.*") from e
  data_hash = json.dumps({"exclusions": [], "name": "jumbf manifest", "alg": "sha256",
                          "hash": list(_file_sha256(path)), "pad": []}).encode()
  fmt, out = b"application/c2pa", ptr(ctypes.c_ubyte)()
  # pylint: disable=protected-access
  n = place(builder._handle, signer.reserve_size(), fmt, ctypes.byref(out))
  if n >= 0:
    lib.c2pa_free(out)
    out = ptr(ctypes.c_ubyte)()
    n = sign(builder._handle, signer._handle, data_hash, fmt, None, ctypes.byref(out))
  if n < 0 or not out:
    raise ProvenanceError(f"signing the sidecar manifest for {path} failed: {read_error()}")
  try:
    return ctypes.string_at(out, n)
  finally:
    lib.c2pa_free(out)


def sign(path: PathLike, manifest: dict, cert: bytes | str | PathLike, key: bytes | str | PathLike,
         ingredients: Iterable[PathLike] = ()) -> str:
  """Signs `path` in place with `manifest` (from `manifest_for`); returns where the manifest went:
  `path` itself (embedded) or `path + '.c2pa'` (sidecar). The first ingredient is the parent of an
  edit. Output is written to a temp file and moved over, so a failure leaves the file untouched."""
  c2pa = _c2pa()
  path, ingredients = pathlib.Path(path), [pathlib.Path(p) for p in ingredients]
  if not path.is_file():
    raise FileNotFoundError(f"no file to sign at {path}")
  manifest, mode = {"title": path.name, **manifest}, path.stat().st_mode & 0o777
  actions = [a.get("action") for s in manifest.get("assertions", [])
             if s.get("label", "").startswith("c2pa.actions") for a in s["data"].get("actions", [])]
  edited = "c2pa.edited" in actions and "c2pa.opened" not in actions
  if edited and not ingredients:
    raise ValueError(f"{path}: a c2pa.edited manifest needs the input file(s) as ingredients")
  try:
    with _context(c2pa) as ctx, c2pa.Builder(manifest, ctx) as builder, \
        c2pa.Signer.from_info(c2pa.C2paSignerInfo(
            c2pa.C2paSigningAlg.ES256, _pem(cert), _pem(key), None)) as signer:
      if edited:   # c2pa-rs adds the c2pa.opened action that references the parent ingredient
        builder.set_intent(c2pa.C2paBuilderIntent.EDIT)
      for i, ing in enumerate(ingredients):
        relationship = "parentOf" if i == 0 and edited else "componentOf"
        with open(ing, "rb") as f:
          builder.add_ingredient({"title": ing.name, "relationship": relationship}, _mime(ing), f)
      if embeds(path):
        def write(tmp):
          with open(path, "rb") as src, open(tmp, "w+b") as dst:
            builder.sign(signer, _mime(path), src, dst)
        _atomic_write(path, None, mode, writer=write)
        return str(path)
      sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
      _atomic_write(sidecar, _sidecar_manifest(builder, signer, path), mode)
      return str(sidecar)
  except c2pa.C2paError as e:
    raise ProvenanceError(f"C2PA signing of {path} failed: {e}") from e


def _summary(store: dict) -> dict[str, Any]:
  m = store["manifests"][store["active_manifest"]]
  actions = [a for s in m.get("assertions", []) if s["label"].startswith("c2pa.actions")
             for a in s["data"].get("actions", [])]
  main = [a for a in actions if a.get("action") != "c2pa.opened"] or actions
  generation = next((s["data"] for s in m.get("assertions", [])
                     if s["label"] == GENERATION_LABEL), None)
  gen, sig = (m.get("claim_generator_info") or [{}])[0], m.get("signature_info", {})
  return {"generation": generation, "action": main[0].get("action") if main else None,
          "digital_source_type": main[0].get("digitalSourceType") if main else None,
          "actions": [a.get("action") for a in actions], "title": m.get("title"),
          "generator": {k: gen.get(k) for k in ("name", "version")},
          "signer": {k: sig.get(k) for k in ("common_name", "issuer", "alg")},
          "ingredients": [i.get("title") for i in m.get("ingredients", [])],
          "label": store["active_manifest"]}


def verify(path: PathLike, trust_anchors: bytes | str | PathLike | None = None) -> dict[str, Any]:
  """Reads and validates the manifest of `path` (embedded, else `path + '.c2pa'`).

  Returns `{'valid', 'signature_ok', 'trusted', 'embedded', 'manifest', 'errors', 'warnings'}`.
  `valid`: a manifest exists, its signature and every hard binding check out (one changed media
  byte fails). An untrusted signer is a warning unless `trust_anchors` (PEM roots; the cert chain
  of `init_keys` works) is given: then it is an error and `trusted` says whether the chain is.
  """
  c2pa = _c2pa()
  path = pathlib.Path(path)
  sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
  res = {"valid": False, "signature_ok": False, "trusted": False, "embedded": None, "manifest": {},
         "errors": [], "warnings": []}
  if not path.is_file():
    res["errors"].append(f"no file at {path}")
    return res
  extra = {"trust": {"user_anchors": _pem(trust_anchors).decode()}} if trust_anchors else None
  try:
    with _context(c2pa, extra) as ctx, open(path, "rb") as f:
      reader = c2pa.Reader.try_create(_mime(path), f, None, ctx) if embeds(path) else None
      res["embedded"] = reader is not None
      if reader is None and sidecar.is_file():
        f.seek(0)
        reader = c2pa.Reader(_mime(path), f, sidecar.read_bytes(), context=ctx)
      if reader is None:
        res["errors"].append(f"no C2PA manifest in {path.name} and no {sidecar.name} beside it")
        return res
      with reader:
        store = json.loads(reader.json())
  except c2pa.C2paError as e:
    res["errors"].append(f"{type(e).__name__.lstrip('_')}: {e}")
    return res
  results = store.get("validation_results", {})
  active = results.get("activeManifest", {})
  for item in active.get("failure", []):
    msg = f"{item.get('code')}: {item.get('explanation', '')}"
    (res["warnings"] if item.get("code") == _UNTRUSTED and not trust_anchors
     else res["errors"]).append(msg)
  for delta in results.get("ingredientDeltas", []):
    for item in delta.get("validationDeltas", {}).get("failure", []):
      if item.get("code") != _UNTRUSTED:
        res["warnings"].append(f"ingredient {item.get('code')}: {item.get('explanation', '')}")
  bad_signature = [c for c in (i.get("code", "") for i in active.get("failure", []))
                   if c != _UNTRUSTED and c.startswith(("claimSignature", "signingCredential"))]
  state = store.get("validation_state")
  res["signature_ok"] = not bad_signature and "claimSignature.validated" in {
      i.get("code") for i in active.get("success", [])}
  res["trusted"] = state == "Trusted"
  res["valid"] = state in ("Valid", "Trusted") and not res["errors"] and res["signature_ok"]
  try:
    res["manifest"] = _summary(store)
  except (KeyError, IndexError, TypeError) as e:
    res["errors"].append(f"malformed manifest store: {e!r}")
    res["valid"] = False
  return res


def weights_digest(params_or_file: Any) -> str:
  """sha256 hex of a weights file, of a checkpoint directory (relative names + contents, sorted),
  or of a params pytree serialised with flax's msgpack (its state dict, keys sorted)."""
  if isinstance(params_or_file, (str, os.PathLike)):
    p = pathlib.Path(params_or_file)
    if p.is_file():
      return _file_sha256(p).hex()
    if p.is_dir():
      h = hashlib.sha256()
      for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(f.relative_to(p).as_posix().encode() + b"\0" + _file_sha256(f))
      return h.hexdigest()
    raise FileNotFoundError(f"no weights file or directory at {p}")
  import flax.serialization  # pylint: disable=import-outside-toplevel

  def canonical(tree):
    if not isinstance(tree, dict):
      return tree
    return {k: canonical(tree[k]) for k in sorted(tree, key=str)}
  state = canonical(flax.serialization.to_state_dict(params_or_file))
  return hashlib.sha256(flax.serialization.msgpack_serialize(state)).hexdigest()
