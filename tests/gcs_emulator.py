"""A local Google Cloud Storage for tests: `gcp-storage-emulator` (PyPI), in memory, serving one bucket.

The emulator ignores generation preconditions and sends no `x-goog-generation` header with a download.
Real GCS does both, and the clients rely on them: sweep claims on `ifGenerationMatch=0` (create only if
absent), TensorStore's OCDBT manifests (Orbax checkpoints) on conditional writes and on
`ifGenerationNotMatch` re-reads. This module adds them, as GCS documents them: a failed
`ifGenerationMatch` is 412, a matched `ifGenerationNotMatch` on a read is 304. gcsfs (through
STORAGE_EMULATOR_HOST) and TensorStore (TENSORSTORE_GCS_HTTP_URL) speak to it (an append on GCS is a
compose, which the emulator serves as GCS does: scaling/storage.py).

    python tests/gcs_emulator.py PORT BUCKET
"""

from __future__ import annotations

import sys
from http import HTTPStatus


def _generation(storage, bucket: str, name: str | None) -> str:
  """The object's current generation, "0" when it does not exist (GCS's convention for preconditions)."""
  if name is None:
    return "0"
  try:
    return str(storage.get_file_obj(bucket, name)["generation"])
  except Exception:  # the emulator's NotFound
    return "0"


def _refuse(response, status: HTTPStatus) -> None:
  response.status = status
  if status == HTTPStatus.PRECONDITION_FAILED:
    response.json({"error": {"code": 412, "message": "At least one of the pre-conditions you specified did not hold.",
                             "errors": [{"reason": "conditionNotMet", "message": "Precondition Failed"}]}})


def _upload_name(request) -> str | None:
  name = request.query.get("name", [None])[0]
  if name is None and isinstance(request.data, dict):
    name = (request.data.get("meta") or request.data).get("name")
  return name


def _guard_upload(insert):
  def guarded(request, response, storage, *args, **kwargs):
    wanted = request.query.get("ifGenerationMatch", [None])[0]
    if wanted is not None and wanted != _generation(storage, request.params["bucket_name"], _upload_name(request)):
      return _refuse(response, HTTPStatus.PRECONDITION_FAILED)
    return insert(request, response, storage, *args, **kwargs)

  return guarded


def _guard_download(download):
  def guarded(request, response, storage, *args, **kwargs):
    current = _generation(storage, request.params["bucket_name"], request.params.get("object_id"))
    if current != "0":
      match = request.query.get("ifGenerationMatch", [None])[0]
      not_match = request.query.get("ifGenerationNotMatch", [None])[0]
      if match is not None and match != current:
        return _refuse(response, HTTPStatus.PRECONDITION_FAILED)
      response["x-goog-generation"] = current
      if not_match is not None and not_match == current:
        return _refuse(response, HTTPStatus.NOT_MODIFIED)
    return download(request, response, storage, *args, **kwargs)

  return guarded


def main(port: int, bucket: str) -> None:
  from gcp_storage_emulator import server
  from gcp_storage_emulator.handlers import objects

  replace = {objects.insert: _guard_upload(objects.insert), objects.download: _guard_download(objects.download)}
  for _, handlers in server.HANDLERS:
    for method, handler in list(handlers.items()):
      if handler in replace:
        handlers[method] = replace[handler]
  objects.insert, objects.download = replace[objects.insert], replace[objects.download]
  srv = server.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
  print(f"gcs emulator on 127.0.0.1:{port}, bucket {bucket}", flush=True)
  srv.run()


if __name__ == "__main__":
  main(int(sys.argv[1]), sys.argv[2])
