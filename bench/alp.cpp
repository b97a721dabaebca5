// ALP (github.com/cwida/ALP) on one file of raw float64 values, for
// bench/floatcodecs.py: built against a checkout of ALP,
//   g++ -O3 -march=native -std=c++17 -I ALP/include bench/alp.cpp ALP/src/*.cpp
//   ./alp FILE REPEATS LOOPS
// prints "ratio compress_GBps decompress_GBps" (medians over REPEATS runs,
// each encoding, then decoding, the whole file LOOPS times).  The encoding
// and decoding are ALP's benchmark's (benchmarks/include/benchmark.hpp):
// row groups of 100 vectors of 1024 values, ALP or ALP_RD per row group as
// its sampling chooses, FFOR bit packing, exceptions patched (unfused
// decode); the size is its formula of bits per value.  Every value decoded
// is compared bit for bit.  Only whole vectors are encoded.
#include "alp.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

constexpr size_t V = alp::config::VECTOR_SIZE;

// One vector's encoding (either scheme's fields).
struct Vector {
	alp::Scheme scheme;
	uint8_t     bit_width, fac, exp;
	int64_t     base;
	uint16_t    exceptions;
	int64_t     packed[V];
	double      exc_values[V];
	uint64_t    right_packed[V];
	uint16_t    left_packed[V], rd_exc[V], positions[V];
};

struct Column {
	std::vector<alp::state<double>> states; // one a row group (ALP_RD's dictionary)
	std::vector<Vector>             vectors;
	std::vector<size_t>             group_of;
};

void encode(const double* data, size_t nvec, Column& c) {
	double   sample[V];
	int64_t  encoded[V];
	uint64_t right[V];
	uint16_t left[V];
	c.states.clear();
	for (size_t first = 0, g = 0; first < nvec; first += alp::config::N_VECTORS_PER_ROWGROUP, g++) {
		size_t             count = std::min(alp::config::N_VECTORS_PER_ROWGROUP, nvec - first);
		const double*      rg    = data + first * V;
		alp::state<double> stt;
		alp::encoder<double>::init(rg, 0, count * V, sample, stt);
		if (stt.scheme == alp::Scheme::ALP_RD) {
			alp::rd_encoder<double>::init(rg, 0, count * V, sample, stt);
		}
		for (size_t k = 0; k < count; k++) {
			Vector& v   = c.vectors[first + k];
			c.group_of[first + k] = g;
			v.scheme    = stt.scheme;
			if (stt.scheme == alp::Scheme::ALP_RD) {
				alp::rd_encoder<double>::encode(rg + k * V, v.rd_exc, v.positions, &v.exceptions, right, left, stt);
				ffor::ffor(right, v.right_packed, stt.right_bit_width, &stt.right_for_base);
				ffor::ffor(left, v.left_packed, stt.left_bit_width, &stt.left_for_base);
			} else {
				alp::encoder<double>::encode(rg + k * V, v.exc_values, v.positions, &v.exceptions, encoded, stt);
				alp::encoder<double>::analyze_ffor(encoded, v.bit_width, &v.base);
				ffor::ffor(encoded, v.packed, v.bit_width, &v.base);
				v.fac = stt.fac;
				v.exp = stt.exp;
			}
		}
		c.states.push_back(stt);
	}
}

void decode(Column& c, size_t nvec, double* out) {
	int64_t  ints[V];
	uint64_t right[V];
	uint16_t left[V];
	for (size_t i = 0; i < nvec; i++) {
		Vector&             v   = c.vectors[i];
		alp::state<double>& stt = c.states[c.group_of[i]];
		if (v.scheme == alp::Scheme::ALP_RD) {
			unffor::unffor(v.right_packed, right, stt.right_bit_width, &stt.right_for_base);
			unffor::unffor(v.left_packed, left, stt.left_bit_width, &stt.left_for_base);
			alp::rd_encoder<double>::decode(out + i * V, right, left, v.rd_exc, v.positions, &v.exceptions, stt);
		} else {
			unffor::unffor(v.packed, ints, v.bit_width, &v.base);
			alp::decoder<double>::decode(ints, v.fac, v.exp, out + i * V);
			alp::decoder<double>::patch_exceptions(out + i * V, v.exc_values, v.positions, &v.exceptions);
		}
	}
}

// Bits a vector takes, by ALP's benchmark's formula.
double bits(const Vector& v, const alp::state<double>& stt) {
	if (v.scheme == alp::Scheme::ALP_RD) {
		return double(stt.right_bit_width + stt.left_bit_width) * V +
		       double(v.exceptions) * (alp::RD_EXCEPTION_SIZE + alp::RD_EXCEPTION_POSITION_SIZE) +
		       double(alp::config::MAX_RD_DICTIONARY_SIZE * 16) / alp::config::ROWGROUP_SIZE * V;
	}
	return double(v.bit_width) * V +
	       double(v.exceptions) * (alp::Constants<double>::EXCEPTION_SIZE + alp::EXCEPTION_POSITION_SIZE) +
	       (8 + 8 + 8 + 64);
}

double seconds_since(std::chrono::steady_clock::time_point t) {
	return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

double median(std::vector<double> v) {
	std::sort(v.begin(), v.end());
	return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

} // namespace

int main(int argc, char** argv) {
	if (argc != 4) {
		std::fprintf(stderr, "usage: %s FILE REPEATS LOOPS\n", argv[0]);
		return 2;
	}
	FILE* f = std::fopen(argv[1], "rb");
	if (!f) {
		std::perror(argv[1]);
		return 1;
	}
	std::vector<double> data;
	double              buf[V];
	size_t              got;
	while ((got = std::fread(buf, sizeof(double), V, f)) == V) {
		data.insert(data.end(), buf, buf + V);
	}
	std::fclose(f);
	size_t nvec = data.size() / V, repeats = std::strtoul(argv[2], nullptr, 10),
	       loops = std::strtoul(argv[3], nullptr, 10);
	if (nvec == 0 || repeats == 0 || loops == 0) {
		std::fprintf(stderr, "%s: no whole vector, or no run\n", argv[1]);
		return 1;
	}
	Column c;
	c.vectors.resize(nvec);
	c.group_of.resize(nvec);
	std::vector<double> out(nvec * V);
	std::vector<double> squeeze, grow;
	double              gb = double(nvec * V * sizeof(double)) * double(loops) / 1e9;
	for (size_t r = 0; r < repeats; r++) {
		auto t = std::chrono::steady_clock::now();
		for (size_t l = 0; l < loops; l++) {
			encode(data.data(), nvec, c);
		}
		squeeze.push_back(gb / seconds_since(t));
		std::memset(out.data(), 0, out.size() * sizeof(double));
		t = std::chrono::steady_clock::now();
		for (size_t l = 0; l < loops; l++) {
			decode(c, nvec, out.data());
		}
		grow.push_back(gb / seconds_since(t));
		if (std::memcmp(out.data(), data.data(), out.size() * sizeof(double)) != 0) {
			std::fprintf(stderr, "%s: ALP did not give back the values bit for bit\n", argv[1]);
			return 1;
		}
	}
	double total = 0;
	for (size_t i = 0; i < nvec; i++) {
		total += bits(c.vectors[i], c.states[c.group_of[i]]);
	}
	std::printf("%.4f %.4f %.4f\n", 64.0 * double(nvec * V) / total, median(squeeze), median(grow));
	return 0;
}
