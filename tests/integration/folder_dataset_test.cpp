// A user's own folder of images (issue 40), end to end on real daemons: Fashion-MNIST written out
// as a folder of 64x64 RGB PNGs and JPEGs with a few broken files among them, registered,
// trained (its trainer killed mid-job, the job resumed by the other), served, and /classify of
// its JPEGs answering with the folder's class names.

#include <stb_image_write.h>

#include <algorithm>
#include <csignal>
#include <regex>

#include "cluster_fixture.h"
#include "mlswarm/dataset.h"

namespace mlswarm {
namespace {

void append(void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size); }

/// A 28x28 grey image scaled to 64x64 (nearest) as RGB, encoded as PNG or JPEG.
std::string encode_64(const std::uint8_t* grey, bool jpeg) {
  constexpr int kSide = 64;
  std::vector<unsigned char> rgb(kSide * kSide * 3);
  for (int y = 0; y < kSide; ++y) {
    for (int x = 0; x < kSide; ++x) {
      const unsigned char v = grey[(y * 28 / kSide) * 28 + x * 28 / kSide];
      for (int c = 0; c < 3; ++c) rgb[(y * kSide + x) * 3 + c] = v;
    }
  }
  std::string out;
  if (jpeg) {
    stbi_write_jpg_to_func(append, &out, kSide, kSide, 3, rgb.data(), 95);
  } else {
    stbi_write_png_to_func(append, &out, kSide, kSide, 3, rgb.data(), kSide * 3);
  }
  return out;
}

/// A class's folder name: Fashion-MNIST's "T-shirt/top" cannot be one.
std::string folder_name(std::string name) {
  std::replace(name.begin(), name.end(), '/', '-');
  return name;
}

class FolderDatasetTest : public ClusterTest {
 protected:
  /// HOME_DIR/datasets/fm64: the first `per_class` training images of each class under train/,
  /// the first 30 test images of each under test/; every other one a JPEG.
  void write_folder(int per_class) {
    const Dataset source = load_dataset("fashion-mnist", MLSWARM_DATA_DIR, "");
    const auto root = home_ / "datasets" / "fm64";
    for (const auto& [split, from, wanted] :
         {std::tuple{"train", &source.train, per_class}, std::tuple{"test", &source.test, 30}}) {
      std::vector<int> written(10, 0);
      for (std::int64_t i = 0; i < from->count; ++i) {
        const int label = from->labels[static_cast<std::size_t>(i)];
        if (written[label] >= wanted) continue;
        const bool jpeg = i % 2 == 1;
        const auto dir = root / split / folder_name(source.info.class_names[label]);
        std::filesystem::create_directories(dir);
        const auto path = dir / (std::to_string(i) + (jpeg ? ".jpg" : ".png"));
        std::ofstream(path, std::ios::binary) << encode_64(from->images.data() + i * 784, jpeg);
        if (std::string(split) == "test" && jpeg && label == 1) trouser_jpegs_.push_back(path);
        ++written[label];
      }
    }
    std::ofstream(root / "train" / "Bag" / "cut.jpg", std::ios::binary) << "\xFF\xD8\xFF\xE0 cut short";
    std::ofstream(root / "train" / "Coat" / "empty.png", std::ios::binary) << "";
  }
  std::pair<int, json> classify(const std::filesystem::path& image) {
    std::ifstream in(image, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    httplib::MultipartFormDataItems items{{"image", bytes, image.filename().string(), "image/jpeg"},
                                          {"model_id", "fm64", "", ""}};
    auto res = client_->Post("/classify", items);
    if (!res) return {0, json()};
    return {res->status, json::parse(res->body, nullptr, false)};
  }
  std::vector<std::filesystem::path> trouser_jpegs_;
};

TEST_F(FolderDatasetTest, AFolderOfImagesIsRegisteredTrainedAndServedWithItsClassNames) {
  write_folder(150);
  for (int i : {2, 3}) start_trainer(i);
  start_controller();
  ASSERT_TRUE(eventually([&] { return trainer_count() == 2; }, 10s));

  EXPECT_EQ(post("/datasets", json{{"name", "fm64"}, {"path", "../fm64"}}.dump()).first, 400);
  EXPECT_EQ(post("/train", json{{"dataset", "fm64"}}.dump()).first, 400) << "not registered yet";
  auto [status, registered] = post("/datasets", json{{"name", "fm64"}}.dump());
  ASSERT_EQ(status, 201) << registered.dump();
  EXPECT_EQ(registered["input_shape"], json({3, 64, 64}));
  EXPECT_EQ(registered["train_size"], 1500);
  EXPECT_EQ(registered["test_size"], 300);
  ASSERT_EQ(registered["skipped"].size(), 2u) << registered["skipped"].dump();
  EXPECT_EQ(registered["skipped"][0]["path"], "train/Bag/cut.jpg");
  EXPECT_EQ(registered["class_tags"][0], "Ankle boot") << "classes sorted by folder name";
  const json listed = get("/datasets")["datasets"];
  EXPECT_TRUE(std::any_of(listed.begin(), listed.end(), [](const json& d) { return d["name"] == "fm64"; }));

  // Its trainer killed mid-job: the other one resumes it from its checkpoint, on the same files
  // (the manifest's list, checked against its hash).
  const std::string id =
      submit_json(json{{"model_id", "fm64"}, {"dataset", "fm64"}, {"train_opts", {{"epochs", 3}, {"batch_size", 32}}}});
  ASSERT_TRUE(eventually(
      [&] {
        const json j = job(id);
        return j.value("state", "") == "succeeded" || (j.value("epoch", 0) >= 2 && j.value("step", 0) > 0);
      },
      300s))
      << job(id).dump();
  ASSERT_EQ(job(id).value("state", ""), "running") << "the job ended before its trainer could be killed";
  const std::string first = job(id)["trainer"];
  const int victim = first.rfind("127.0.0.2:", 0) == 0 ? 2 : 3;
  trainers_[victim]->signal(SIGKILL);
  ASSERT_TRUE(eventually([&] { return job_in(id, "succeeded"); }, 300s)) << job(id).dump();
  EXPECT_EQ(job(id)["attempts"], 2);
  const std::string survivor = trainers_[victim == 2 ? 3 : 2]->log();
  EXPECT_TRUE(std::regex_search(survivor, std::regex("resuming from checkpoint at epoch [23] step 0"))) << survivor;
  EXPECT_NE(survivor.find("dataset fm64 loaded: 1500 train, 300 test images"), std::string::npos) << survivor;
  const double accuracy = get("/models/fm64").value("accuracy", 0.0);
  std::cout << "fm64 (1,500 images at 64x64x3, 3 epochs, resumed after a kill): test accuracy " << accuracy << "\n";
  EXPECT_GE(accuracy, 0.65) << "a 1-epoch run of 1,500 images at 28x28 gets about 0.75";

  const json v2 = get("/v2/models/fm64");
  EXPECT_EQ(v2["inputs"][0]["shape"], json({-1, 3, 64, 64})) << v2.dump();
  int right = 0;
  for (std::size_t i = 0; i < 5 && i < trouser_jpegs_.size(); ++i) {
    auto [code, answer] = classify(trouser_jpegs_[i]);
    ASSERT_EQ(code, 200) << answer.dump();
    EXPECT_EQ(answer["classes"].size(), 10u);
    right += answer["class"] == "Trouser" ? 1 : 0;
  }
  EXPECT_GE(right, 4) << "of 5 trousers, classified by their folder's name";
  const json examples = get("/datasets/fm64/examples?split=test&count=2");
  EXPECT_EQ(examples["examples"][0].size(), 3u) << "three channels of 64 rows";
  EXPECT_EQ(examples["examples"][0][0].size(), 64u);
}

}  // namespace
}  // namespace mlswarm
