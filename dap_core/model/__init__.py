"""The DAP network: DINOv3-style ViT backbone, adapter, DPT depth and range-mask heads.

`from dap_core.model import DAP, DAPConfig, DAPOutput, load_model, save_model`. Module roles,
in import order (each imports only those before it): config -> vit, adapter, dpt -> dap (the
network, no files) -> state (state-dict checks, safe readers) -> official (the released
checkpoint) -> checkpoint (our format; `load_model` for every weights file). Preprocessing
lives in `dap_core.model.preprocess`.
"""

from dap_core.model.checkpoint import load_model, save_model
from dap_core.model.config import DAPConfig
from dap_core.model.dap import DAP, DAPOutput, mask_head_name

__all__ = ["DAP", "DAPConfig", "DAPOutput", "load_model", "mask_head_name", "save_model"]
