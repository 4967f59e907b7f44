#pragma once

// The ports mlswarm listens on unless told otherwise; every default in the code comes from here.

namespace mlswarm {

inline constexpr int kDefaultControllerPort = 48515;  ///< CONTROLLER_PORT
inline constexpr int kDefaultTrainPort = 48516;       ///< TRAIN_PORT
inline constexpr int kDefaultRendezvousPort = 48517;  ///< RDZV_PORT: data-parallel jobs meet here (and above)

}  // namespace mlswarm
