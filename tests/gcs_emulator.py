"""A local Google Cloud Storage for tests: `gcp-storage-emulator` (PyPI), in memory, serving one bucket.

The emulator ignores upload preconditions; real GCS refuses an upload with `ifGenerationMatch=0` when the
object exists (HTTP 412), and sweep claims rely on exactly that, so this adds it. gcsfs (through
STORAGE_EMULATOR_HOST), TensorStore (TENSORSTORE_GCS_HTTP_URL) and google-cloud-storage all speak to it.

    python tests/gcs_emulator.py PORT BUCKET
"""

from __future__ import annotations

import sys
from http import HTTPStatus


def _honour_create_only(insert):
  def guarded(request, response, storage, *args, **kwargs):
    if request.query.get("ifGenerationMatch", [None])[0] == "0":
      name = request.query.get("name", [None])[0]
      if name is None and isinstance(request.data, dict):
        name = (request.data.get("meta") or request.data).get("name")
      try:
        storage.get_file_obj(request.params["bucket_name"], name)
      except Exception:  # the emulator's NotFound: the object is absent, so the upload may create it
        pass
      else:
        response.status = HTTPStatus.PRECONDITION_FAILED
        response.json({"error": {"code": 412, "message": "At least one of the pre-conditions you specified did not hold.",
                                 "errors": [{"reason": "conditionNotMet", "message": "Precondition Failed"}]}})
        return None
    return insert(request, response, storage, *args, **kwargs)

  return guarded


def main(port: int, bucket: str) -> None:
  from gcp_storage_emulator import server
  from gcp_storage_emulator.handlers import objects

  guarded = _honour_create_only(objects.insert)
  for _, handlers in server.HANDLERS:
    for method, handler in list(handlers.items()):
      if handler is objects.insert:
        handlers[method] = guarded
  objects.insert = guarded
  srv = server.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
  print(f"gcs emulator on 127.0.0.1:{port}, bucket {bucket}", flush=True)
  srv.run()


if __name__ == "__main__":
  main(int(sys.argv[1]), sys.argv[2])
